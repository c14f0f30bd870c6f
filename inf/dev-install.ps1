# Dev loop without a package: create the kernel service by hand (as echosrv's README does).
# Usage: .\dev-install.ps1 C:\khttp\khttp.sys      then: sc.exe start khttp / sc.exe stop khttp
param([Parameter(Mandatory)][string]$Sys)
$ErrorActionPreference = 'Stop'
sc.exe create khttp type= kernel start= demand binPath= $Sys
if ($LASTEXITCODE -ne 0) { throw "sc create failed ($LASTEXITCODE)" }
Write-Host 'Created the khttp service; start it with: sc.exe start khttp'
