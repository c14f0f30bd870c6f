# Installs and starts khttp.sys on a test-signing machine (guest side; run elevated).
# Usage: .\install.ps1 [-Package C:\khttp\pkg]
# Needs: bcdedit /set testsigning on (and Secure Boot off), then a reboot (DRIVER-NOTES 2.4).
param([string]$Package = (Join-Path $PSScriptRoot '..\khttp_package'))
$ErrorActionPreference = 'Stop'

$cert = Join-Path $Package 'WDRLocalTestCert.cer'
if (Test-Path $cert) {
    # cargo make signs with a fresh test certificate on each new build machine: trust it.
    certutil.exe -addstore -f Root $cert | Out-Null
    certutil.exe -addstore -f TrustedPublisher $cert | Out-Null
}
$inf = Join-Path $Package 'khttp.inf'
pnputil.exe /add-driver $inf /install
if ($LASTEXITCODE -ne 0) { throw "pnputil /add-driver failed ($LASTEXITCODE)" }

sc.exe start khttp
if ($LASTEXITCODE -ne 0 -and $LASTEXITCODE -ne 1056) { throw "sc start khttp failed ($LASTEXITCODE)" }  # 1056: already running
$state = (sc.exe query khttp | Select-String 'STATE').ToString()
if ($state -notmatch 'RUNNING') { throw "khttp is not running: $state" }
Write-Host "khttp is running; administer it with khttpctl (endpoint \\.\KHttp)."
