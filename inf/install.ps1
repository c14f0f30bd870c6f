# Installs and starts khttp.sys on a test-signing machine (guest side; run elevated).
# Usage: .\install.ps1 [-Package C:\khttp\pkg]
# Needs: bcdedit /set testsigning on (and Secure Boot off), then a reboot (docs/driver-facts.md,
# "INF and test signing").
param([string]$Package = (Join-Path $PSScriptRoot '..\khttp_package'))
$ErrorActionPreference = 'Stop'

$cert = Join-Path $Package 'WDRLocalTestCert.cer'
if (Test-Path $cert) {
    # cargo make signs with a fresh test certificate on each new build machine: trust it.
    # A native program's failure does not stop the script ($ErrorActionPreference covers
    # cmdlets only): its exit code is checked, or pnputil would fail later for a reason
    # nobody sees (issue #22, defect 12).
    foreach ($store in 'Root', 'TrustedPublisher') {
        certutil.exe -addstore -f $store $cert | Out-Null
        if ($LASTEXITCODE -ne 0) { throw "certutil -addstore $store failed ($LASTEXITCODE)" }
    }
}
$inf = Join-Path $Package 'khttp.inf'
pnputil.exe /add-driver $inf /install
# 0: installed. 3010 (ERROR_SUCCESS_REBOOT_REQUIRED): installed, a reboot completes it.
# 259 (ERROR_NO_MORE_ITEMS): the package is already in the driver store, nothing newer to do.
$code = $LASTEXITCODE
if ($code -notin 0, 259, 3010) { throw "pnputil /add-driver failed ($code)" }
if ($code -eq 3010) { Write-Warning 'pnputil: a reboot is needed to complete the install' }

sc.exe start khttp | Out-Null
if ($LASTEXITCODE -ne 0 -and $LASTEXITCODE -ne 1056) { throw "sc start khttp failed ($LASTEXITCODE)" }  # 1056: already running
# The state from WMI, whose values do not depend on the system language (sc.exe's text does).
$state = (Get-CimInstance Win32_SystemDriver -Filter "Name='khttp'").State
if ($state -ne 'Running') { throw "khttp is not running: $state" }
Write-Host "khttp is running; administer it with khttpctl (endpoint \\.\KHttp)."
