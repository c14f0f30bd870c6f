# Stops khttp.sys and removes its driver package (guest side; run elevated).
# sc stop must return promptly: a hang means leaked sockets, IRPs or NPIs (docs/driver-facts.md,
# "Unload order").
# Nothing here parses text meant for people: states come from WMI and packages from DISM, whose
# values are the same in every system language.
$ErrorActionPreference = 'Stop'

function Get-KhttpDriver { Get-CimInstance Win32_SystemDriver -Filter "Name='khttp'" }

if (Get-KhttpDriver) {
    sc.exe stop khttp | Out-Null
    $deadline = (Get-Date).AddSeconds(30)
    while ((Get-KhttpDriver).State -ne 'Stopped') {
        if ((Get-Date) -gt $deadline) { throw 'khttp did not stop within 30 s (sc stop hung)' }
        Start-Sleep -Milliseconds 200
    }
}

# Remove the oemNN.inf that the driver store published for khttp.inf.
Get-WindowsDriver -Online |
    Where-Object { [IO.Path]::GetFileName($_.OriginalFileName) -ieq 'khttp.inf' } |
    ForEach-Object {
        pnputil.exe /delete-driver $_.Driver /uninstall /force | Out-Null
        if ($LASTEXITCODE -notin 0, 3010) { throw "pnputil /delete-driver $($_.Driver) failed ($LASTEXITCODE)" }
    }
# A primitive driver's service may outlive the package (unverified: docs/driver-facts.md, "INF
# and test signing"): remove it if so.
if (Get-KhttpDriver) { sc.exe delete khttp | Out-Null }
Write-Host 'khttp removed.'
