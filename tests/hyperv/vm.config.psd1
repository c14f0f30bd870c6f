# Hyper-V test VM settings (no secrets: credentials come from Get-Credential or an
# Export-Clixml file outside the repository, see README.md).
@{
    VmName         = 'khttp-test'
    Checkpoint     = 'clean'
    # A Windows 11 21H2+ or Server 2022+ VHDX (KMDF 1.33 needs it); the VM uses a differencing disk.
    BaseVhd        = 'C:\Hyper-V\base\win11.vhdx'
    VmDir          = 'C:\Hyper-V\khttp'
    SwitchName     = 'Default Switch'
    MemoryBytes    = 4GB
    GuestDir       = 'C:\khttp'
    CredentialFile = "$env:USERPROFILE\khttp-vm-cred.xml"
    HttpPort       = 8080
}
