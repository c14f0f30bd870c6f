# Per run: restore the checkpoint, install khttp.sys, run the black-box suite against it inside the
# VM, check that `sc stop` returns, collect logs and dumps, revert (docs/driver-facts.md,
# "Hyper-V test flow").
# Exit code: 0 when everything passed. Run elevated on the Hyper-V host.
param(
    [Parameter(Mandatory)][string]$Package,       # khttp_package\ from cargo make
    [Parameter(Mandatory)][string]$Khttpctl,      # khttpctl.exe
    [string]$TestsDir = (Join-Path $PSScriptRoot '..\..\target\x86_64-pc-windows-msvc\release\deps')
)
. (Join-Path $PSScriptRoot 'common.ps1')
$name = $Config.VmName
$guest = $Config.GuestDir
$out = Join-Path $PSScriptRoot 'out'
New-Item -ItemType Directory -Force $out | Out-Null
$cred = Get-VmCredential
$failed = $false

Restore-VMSnapshot -VMName $name -Name $Config.Checkpoint -Confirm:$false
Start-VM -Name $name
Wait-VmReady $cred
$bootBefore = Invoke-Command -VMName $name -Credential $cred -ScriptBlock { (Get-CimInstance Win32_OperatingSystem).LastBootUpTime }
$s = New-PSSession -VMName $name -Credential $cred
try {
    Invoke-Command -Session $s -ArgumentList $guest -ScriptBlock { param($g) New-Item -ItemType Directory -Force "$g\pkg", "$g\tests" | Out-Null }
    Copy-Item -ToSession $s -Recurse -Path (Join-Path $Package '*') -Destination "$guest\pkg"
    Copy-Item -ToSession $s -Path $Khttpctl -Destination "$guest\khttpctl.exe"
    Copy-Item -ToSession $s -Path (Join-Path $PSScriptRoot '..\..\inf\install.ps1'), (Join-Path $PSScriptRoot '..\..\inf\uninstall.ps1') -Destination $guest
    # The khttp-tests binaries (admin-*.exe, http-*.exe, ...) built with --no-run.
    Get-ChildItem $TestsDir -Filter '*.exe' | Where-Object { $_.Name -match '^(admin|http|lifecycle)-[0-9a-f]+\.exe$' } |
        ForEach-Object { Copy-Item -ToSession $s -Path $_.FullName -Destination "$guest\tests" }

    $result = Invoke-Command -Session $s -ArgumentList $guest -ScriptBlock {
        param($g)
        $ErrorActionPreference = 'Continue'
        & "$g\install.ps1" -Package "$g\pkg" *>&1 | Out-String | Write-Output
        # The same black-box suite as on Linux, pointed at the driver.
        $env:KHTTP_TEST_EXTERNAL = '1'
        $env:KHTTP_ENDPOINT = 'device:\\.\KHttp'
        $env:KHTTP_TEST_HOST = '127.0.0.1'
        $env:KHTTPCTL_BIN = "$g\khttpctl.exe"
        $code = 0
        foreach ($t in Get-ChildItem "$g\tests" -Filter '*.exe') {
            & $t.FullName --test-threads=1 *>&1 | Out-String | Write-Output
            if ($LASTEXITCODE -ne 0) { $code = 1 }
        }
        # Unload must return promptly (a hang means leaked sockets, IRPs or NPIs).
        $sw = [Diagnostics.Stopwatch]::StartNew()
        & "$g\uninstall.ps1" *>&1 | Out-String | Write-Output
        if ($LASTEXITCODE -ne 0 -or $sw.Elapsed.TotalSeconds -gt 30) { $code = 2 }
        verifier.exe /query | Out-String | Write-Output
        wevtutil.exe epl System "$g\System.evtx"
        "EXIT=$code"
    }
    $result | Out-File (Join-Path $out 'guest.log')
    if (($result | Select-String 'EXIT=(\d)').Matches[0].Groups[1].Value -ne '0') { $failed = $true }

    # Logs and dumps.
    Copy-Item -FromSession $s -Path "$guest\System.evtx" -Destination $out -ErrorAction SilentlyContinue
    Copy-Item -FromSession $s -Path 'C:\Windows\INF\setupapi.dev.log' -Destination $out -ErrorAction SilentlyContinue
    Copy-Item -FromSession $s -Path 'C:\Windows\MEMORY.DMP' -Destination $out -ErrorAction SilentlyContinue
    Copy-Item -FromSession $s -Recurse -Path 'C:\Windows\Minidump' -Destination $out -ErrorAction SilentlyContinue
} catch {
    $_ | Out-String | Out-File (Join-Path $out 'host-error.log')
    $failed = $true
} finally {
    Remove-PSSession $s -ErrorAction SilentlyContinue
}
# A changed boot time means the guest bugchecked and rebooted.
$bootAfter = Invoke-Command -VMName $name -Credential $cred -ScriptBlock { (Get-CimInstance Win32_OperatingSystem).LastBootUpTime } -ErrorAction SilentlyContinue
if ($bootAfter -and $bootAfter -ne $bootBefore) { Write-Host 'The guest rebooted: bugcheck?'; $failed = $true }
Stop-VM -Name $name -TurnOff -Force
if ($failed) { Write-Host "FAILED; logs in $out"; exit 1 }
Write-Host 'Hyper-V integration run passed.'
exit 0
