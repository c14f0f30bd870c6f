# One-time: creates the golden test-signing VM and its 'clean' checkpoint (docs/driver-facts.md,
# "Hyper-V test flow").
# Run elevated on the Hyper-V host.
. (Join-Path $PSScriptRoot 'common.ps1')
$name = $Config.VmName
$cred = Get-VmCredential

New-Item -ItemType Directory -Force $Config.VmDir | Out-Null
$vhd = Join-Path $Config.VmDir "$name.vhdx"
New-VHD -ParentPath $Config.BaseVhd -Path $vhd -Differencing | Out-Null
New-VM -Name $name -Generation 2 -MemoryStartupBytes $Config.MemoryBytes -VHDPath $vhd -SwitchName $Config.SwitchName | Out-Null
Set-VMFirmware -VMName $name -EnableSecureBoot Off          # test signing needs Secure Boot off
Set-VM -Name $name -AutomaticCheckpointsEnabled $false
Enable-VMIntegrationService -VMName $name -Name 'Guest Service Interface'
Start-VM -Name $name
Wait-VmReady $cred

Invoke-Command -VMName $name -Credential $cred -ArgumentList $Config.HttpPort -ScriptBlock {
    param($port)
    bcdedit.exe /set testsigning on | Out-Null
    # Complete memory dumps for bugchecks; keep the old one for collection.
    Set-ItemProperty 'HKLM:\SYSTEM\CurrentControlSet\Control\CrashControl' -Name CrashDumpEnabled -Value 1
    Set-ItemProperty 'HKLM:\SYSTEM\CurrentControlSet\Control\CrashControl' -Name Overwrite -Value 1
    verifier.exe /standard /driver khttp.sys | Out-Null
    # KMDF Verifier for the khttp service (takes effect when the service key exists).
    New-NetFirewallRule -DisplayName 'khttp test' -Direction Inbound -Protocol TCP -LocalPort $port -Action Allow | Out-Null
    Restart-Computer -Force
}
Start-Sleep -Seconds 20
Wait-VmReady $cred
$ts = Invoke-Command -VMName $name -Credential $cred -ScriptBlock { (bcdedit.exe /enum '{current}' | Select-String testsigning).ToString() }
if ($ts -notmatch 'Yes') { throw "testsigning is not on: $ts" }
Stop-VM -Name $name -Force
Checkpoint-VM -Name $name -SnapshotName $Config.Checkpoint
Write-Host "Golden VM $name ready with checkpoint '$($Config.Checkpoint)'."
