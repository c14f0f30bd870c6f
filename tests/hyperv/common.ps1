# Shared helpers for the Hyper-V scripts (dot-source this file).
$ErrorActionPreference = 'Stop'
$Config = Import-PowerShellDataFile (Join-Path $PSScriptRoot 'vm.config.psd1')

function Get-VmCredential {
    if (Test-Path $Config.CredentialFile) { return Import-Clixml $Config.CredentialFile }
    $cred = Get-Credential -Message "Administrator account of $($Config.VmName)"
    $cred | Export-Clixml $Config.CredentialFile
    return $cred
}

function Wait-VmReady([pscredential]$Cred, [int]$TimeoutSeconds = 600) {
    $deadline = (Get-Date).AddSeconds($TimeoutSeconds)
    while ((Get-Date) -lt $deadline) {
        try {
            if (Invoke-Command -VMName $Config.VmName -Credential $Cred -ScriptBlock { $true } -ErrorAction Stop) { return }
        } catch { Start-Sleep -Seconds 3 }
    }
    throw "$($Config.VmName) did not answer PowerShell Direct within $TimeoutSeconds s"
}
