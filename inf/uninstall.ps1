# Stops khttp.sys and removes its driver package (guest side; run elevated).
# sc stop must return promptly: a hang means leaked sockets, IRPs or NPIs (DRIVER-NOTES 2.5).
$ErrorActionPreference = 'Stop'

sc.exe stop khttp | Out-Null
$deadline = (Get-Date).AddSeconds(30)
while ((sc.exe query khttp | Select-String 'STATE').ToString() -notmatch 'STOPPED') {
    if ((Get-Date) -gt $deadline) { throw 'khttp did not stop within 30 s (sc stop hung)' }
    Start-Sleep -Milliseconds 200
}

# Find the oemNN.inf that pnputil assigned to khttp.inf and remove it.
$published = pnputil.exe /enum-drivers | Out-String
$blocks = $published -split "(\r?\n){2,}"
foreach ($b in $blocks) {
    if ($b -match 'Original Name:\s+khttp\.inf' -and $b -match 'Published Name:\s+(oem\d+\.inf)') {
        pnputil.exe /delete-driver $Matches[1] /uninstall /force
    }
}
# A primitive driver's service may outlive the package (DRIVER-NOTES 9.4): remove it if so.
if (sc.exe query khttp 2>$null | Select-String 'SERVICE_NAME') { sc.exe delete khttp | Out-Null }
Write-Host 'khttp removed.'
