# WinCert Orchestrator: the TLS certificate of SQL Server instances.
# Target: Windows PowerShell 5.1 on .NET Framework 4.7+ (also runs on PowerShell 7).
# Loaded once per runspace after Common.ps1 (or pre-installed as a module for JEA endpoints).
# Public functions are defined at column 0; helpers shared with other functions are the private
# *-WinCertPrivate* functions of Common.ps1, the others are nested inside the function that uses
# them. The simulator implements the same functions in simulator/commands/sql.py; both must
# produce the same objects, warnings and errors (tests/contract checks names, parameters and
# error ids).
#
# Registry (64-bit view): HKLM\SOFTWARE\Microsoft\Microsoft SQL Server\Instance Names\SQL maps
# an instance name to its id; ...\<id>\MSSQLServer\SuperSocketNetLib value Certificate holds the
# thumbprint, written in lower case as SQL Server Configuration Manager does and compared
# case-insensitively. Service: MSSQLSERVER or MSSQL$<name>; its account is Win32_Service.StartName.
# No text (WQL, icacls, scripts) is ever built from parameter values.

function Get-WinCertSqlInstance {
    <#
    .SYNOPSIS
    Lists every installed SQL Server instance as one compact JSON string each.

    .DESCRIPTION
    Keys: InstanceName, InstanceId, Certificate (upper-case hex or ''), ServiceName (MSSQLSERVER or
    MSSQL$<name>), ServiceAccount (normalised: LocalSystem -> NT AUTHORITY\SYSTEM, .\user ->
    COMPUTERNAME\user; '' when the service is missing), ServiceState (Win32_Service.State, e.g.
    Running or Stopped; '' when missing). No SQL Server: no output.
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param()

    $ErrorActionPreference = 'Stop'

    $hklm = [Microsoft.Win32.RegistryKey]::OpenBaseKey(
        [Microsoft.Win32.RegistryHive]::LocalMachine, [Microsoft.Win32.RegistryView]::Registry64)
    try {
        $names = $hklm.OpenSubKey('SOFTWARE\Microsoft\Microsoft SQL Server\Instance Names\SQL')
        if ($null -eq $names) { return }
        try {
            $services = @{}
            foreach ($service in (Get-CimInstance -ClassName Win32_Service)) { $services[[string]$service.Name] = $service }
            foreach ($instanceName in $names.GetValueNames()) {
                $instanceId = [string]$names.GetValue($instanceName)
                $certificate = ''
                $netLib = $hklm.OpenSubKey(('SOFTWARE\Microsoft\Microsoft SQL Server\{0}\MSSQLServer\SuperSocketNetLib' -f $instanceId))
                if ($null -ne $netLib) {
                    try { $certificate = ([string]$netLib.GetValue('Certificate', '')).Trim().ToUpperInvariant() }
                    finally { $netLib.Close() }
                }
                $serviceName = Get-WinCertPrivateSqlServiceName -InstanceName $instanceName
                $service = $services[$serviceName]
                [pscustomobject]@{
                    InstanceName   = [string]$instanceName
                    InstanceId     = $instanceId
                    Certificate    = $certificate
                    ServiceName    = $serviceName
                    ServiceAccount = if ($null -ne $service) { ConvertTo-WinCertPrivateAccountName -StartName $service.StartName } else { '' }
                    ServiceState   = if ($null -ne $service) { [string]$service.State } else { '' }
                } | ConvertTo-Json -Compress
            }
        }
        finally { $names.Close() }
    }
    finally { $hklm.Close() }
}

function Set-WinCertSqlCertificate {
    <#
    .SYNOPSIS
    Makes one SQL Server instance use a certificate: key ACL, then registry, then restart.

    .DESCRIPTION
    1. Resolves the instance (WinCert.SqlInstanceNotFound), the certificate in
       LocalMachine\<StorePath> (WinCert.CertificateNotFound) and its private-key file
       (WinCert.PrivateKeyNotFound): the CNG key UniqueName (RSA or ECDSA) or the CAPI
       UniqueKeyContainerName, under %ProgramData%\Microsoft\Crypto\{Keys,SystemKeys,
       RSA\MachineKeys,DSS\MachineKeys}.
    2. Grants Read on that file to the service account (read from Win32_Service.StartName and
       normalised) with Get-Acl / Set-Acl and a FileSystemAccessRule, unless the account can
       already read it; failure is WinCert.KeyAclFailed and nothing has changed.
    3. Writes the Certificate value (lower case) unless it already names the certificate.
    4. With -RestartService, stops the service (and its dependents) and starts it again, then
       the dependents that were running. A failure is reported in RestartError, not thrown.
    Output: {"InstanceName", "Outcome": "bound"|"unchanged", "Restarted", "RestartError"};
    unchanged when neither the ACL nor the registry value had to change.
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [string]$InstanceName,

        [Parameter(Mandatory)]
        [ValidatePattern('^[0-9A-Fa-f]{40}\z')]
        [string]$Thumbprint,

        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [string]$StorePath,

        [switch]$RestartService
    )

    $ErrorActionPreference = 'Stop'

    # Full path of the certificate's private-key file, or $null. CNG keys (RSA and ECDSA) by
    # UniqueName, CAPI keys by UniqueKeyContainerName; the folder is searched, never guessed.
    function Find-PrivateKeyFile {
        param(
            [System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate
        )
        $uniqueName = $null
        $key = $null
        try {
            $key = [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPrivateKey($Certificate)
            if ($null -eq $key) {
                $key = [System.Security.Cryptography.X509Certificates.ECDsaCertificateExtensions]::GetECDsaPrivateKey($Certificate)
            }
            if ($key -is [System.Security.Cryptography.RSACng] -or $key -is [System.Security.Cryptography.ECDsaCng]) {
                $uniqueName = $key.Key.UniqueName
            }
            elseif ($key -is [System.Security.Cryptography.ICspAsymmetricAlgorithm]) {
                $uniqueName = $key.CspKeyContainerInfo.UniqueKeyContainerName
            }
            elseif ($null -eq $key -and $Certificate.PrivateKey -is [System.Security.Cryptography.ICspAsymmetricAlgorithm]) {
                # DSA and other CAPI keys.
                $uniqueName = $Certificate.PrivateKey.CspKeyContainerInfo.UniqueKeyContainerName
            }
        }
        catch {
            $uniqueName = $null
        }
        finally {
            if ($key -is [System.IDisposable]) { $key.Dispose() }
        }
        if (-not $uniqueName) { return $null }
        $crypto = Join-Path -Path $env:ProgramData -ChildPath 'Microsoft\Crypto'
        foreach ($folder in @('Keys', 'SystemKeys', 'RSA\MachineKeys', 'DSS\MachineKeys')) {
            $path = Join-Path -Path (Join-Path -Path $crypto -ChildPath $folder) -ChildPath $uniqueName
            if (Test-Path -LiteralPath $path -PathType Leaf) { return $path }
        }
        return $null
    }

    $Thumbprint = $Thumbprint.ToUpperInvariant()
    $hklm = [Microsoft.Win32.RegistryKey]::OpenBaseKey(
        [Microsoft.Win32.RegistryHive]::LocalMachine, [Microsoft.Win32.RegistryView]::Registry64)
    try {
        $instance = Find-WinCertPrivateSqlInstance -Root $hklm -Name $InstanceName
        if ($null -eq $instance) {
            $message = "SQL Server instance '{0}' was not found." -f $InstanceName
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.SqlInstanceNotFound' -Category ObjectNotFound -Target $InstanceName -Exception ([System.Management.Automation.ItemNotFoundException]::new($message))))
        }
        $netLibPath = 'SOFTWARE\Microsoft\Microsoft SQL Server\{0}\MSSQLServer\SuperSocketNetLib' -f $instance.Id
        $serviceName = Get-WinCertPrivateSqlServiceName -InstanceName $instance.Name

        $certificate = Get-WinCertPrivateKeyedCertificate -StorePath $StorePath -Thumbprint $Thumbprint `
            -NoKeyErrorId 'WinCert.PrivateKeyNotFound' -Cmdlet $PSCmdlet
        $keyFile = Find-PrivateKeyFile -Certificate $certificate
        if ($null -eq $keyFile) {
            $message = 'The private key file of certificate {0} in LocalMachine\{1} was not found.' -f $Thumbprint, $StorePath
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.PrivateKeyNotFound' -Category ObjectNotFound -Target $Thumbprint -Exception ([System.Management.Automation.ItemNotFoundException]::new($message))))
        }

        # 1. Read access for the service account (nothing else has changed if this fails).
        $service = @(Get-CimInstance -ClassName Win32_Service | Where-Object { $_.Name -eq $serviceName })[0]
        $account = if ($null -ne $service) { ConvertTo-WinCertPrivateAccountName -StartName $service.StartName } else { '' }
        $aclProblem = $null
        $granted = $false
        if (-not $account) {
            $aclProblem = 'the service {0} has no account' -f $serviceName
        }
        else {
            try {
                $sid = [System.Security.Principal.NTAccount]::new($account).Translate([System.Security.Principal.SecurityIdentifier])
                $read = [System.Security.AccessControl.FileSystemRights]::Read
                $canRead = {
                    param($Acl)
                    foreach ($rule in $Acl.GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier])) {
                        if ($rule.AccessControlType -eq 'Allow' -and $rule.IdentityReference -eq $sid -and
                            ($rule.FileSystemRights -band $read) -eq $read) { return $true }
                    }
                    return $false
                }
                $acl = Get-Acl -LiteralPath $keyFile
                if (-not (& $canRead $acl)) {
                    $rule = [System.Security.AccessControl.FileSystemAccessRule]::new(
                        $sid, $read, [System.Security.AccessControl.AccessControlType]::Allow)
                    $acl.AddAccessRule($rule)
                    Set-Acl -LiteralPath $keyFile -AclObject $acl
                    if (-not (& $canRead (Get-Acl -LiteralPath $keyFile))) { throw 'the new rule is not in the ACL' }
                    $granted = $true
                }
            }
            catch {
                $aclProblem = $_.Exception.Message
            }
        }
        if ($null -ne $aclProblem) {
            $message = 'Cannot grant Read on the private key of certificate {0} ({1}): {2}.' -f $Thumbprint, $keyFile, $aclProblem.TrimEnd('.')
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.KeyAclFailed' -Category PermissionDenied -Target $Thumbprint))
        }
        if ($granted) { Write-Verbose ('Granted Read on {0} to {1}.' -f $keyFile, $account) }
        else { Write-Verbose ('{0} can already read {1}.' -f $account, $keyFile) }

        # 2. The registry value.
        $netLib = $hklm.OpenSubKey($netLibPath, $true)
        if ($null -eq $netLib) {
            $message = "SQL Server instance '{0}' was not found." -f $InstanceName
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.SqlInstanceNotFound' -Category ObjectNotFound -Target $InstanceName -Exception ([System.Management.Automation.ItemNotFoundException]::new($message))))
        }
        try {
            $current = ([string]$netLib.GetValue('Certificate', '')).Trim()
            $changed = $current -ne $Thumbprint
            if ($changed) {
                $netLib.SetValue('Certificate', $Thumbprint.ToLowerInvariant(), [Microsoft.Win32.RegistryValueKind]::String)
            }
            $written = [string]$netLib.GetValue('Certificate', '')
        }
        finally { $netLib.Close() }
        Write-Verbose ('Certificate of SQL Server instance {0} ({1}) is {2}.' -f $instance.Name, $instance.Id, $written)

        # 3. The restart.
        $restarted = $false
        $restartError = $null
        if ($RestartService) {
            $restartError = Restart-WinCertPrivateSqlService -Name $serviceName
            $restarted = $null -eq $restartError
        }
        [pscustomobject]@{
            InstanceName = $instance.Name
            Outcome      = if ($granted -or $changed) { 'bound' } else { 'unchanged' }
            Restarted    = $restarted
            RestartError = $restartError
        } | ConvertTo-Json -Compress
    }
    finally { $hklm.Close() }
}

function Clear-WinCertSqlCertificate {
    <#
    .SYNOPSIS
    Stops one SQL Server instance from using a certificate, if it is using it.

    .DESCRIPTION
    Only when the instance's Certificate value is Thumbprint (case-insensitive) is it set to ''
    (never deleted) and, with -RestartService, the service restarted (failure in RestartError).
    Output: {"InstanceName", "Outcome": "unbound"|"not_bound", "CurrentThumbprint" (the value
    found, upper case, or null when empty), "Restarted", "RestartError"}.
    Errors: WinCert.SqlInstanceNotFound.
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [string]$InstanceName,

        [Parameter(Mandatory)]
        [ValidatePattern('^[0-9A-Fa-f]{40}\z')]
        [string]$Thumbprint,

        [switch]$RestartService
    )

    $ErrorActionPreference = 'Stop'

    $Thumbprint = $Thumbprint.ToUpperInvariant()
    $hklm = [Microsoft.Win32.RegistryKey]::OpenBaseKey(
        [Microsoft.Win32.RegistryHive]::LocalMachine, [Microsoft.Win32.RegistryView]::Registry64)
    try {
        $instance = Find-WinCertPrivateSqlInstance -Root $hklm -Name $InstanceName
        $netLib = $null
        if ($null -ne $instance) {
            $netLib = $hklm.OpenSubKey(('SOFTWARE\Microsoft\Microsoft SQL Server\{0}\MSSQLServer\SuperSocketNetLib' -f $instance.Id), $true)
        }
        if ($null -eq $netLib) {
            $message = "SQL Server instance '{0}' was not found." -f $InstanceName
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.SqlInstanceNotFound' -Category ObjectNotFound -Target $InstanceName -Exception ([System.Management.Automation.ItemNotFoundException]::new($message))))
        }
        try {
            $current = ([string]$netLib.GetValue('Certificate', '')).Trim().ToUpperInvariant()
            $bound = $current -eq $Thumbprint
            if ($bound) {
                $netLib.SetValue('Certificate', '', [Microsoft.Win32.RegistryValueKind]::String)
            }
        }
        finally { $netLib.Close() }
        $restarted = $false
        $restartError = $null
        if ($bound -and $RestartService) {
            $serviceName = Get-WinCertPrivateSqlServiceName -InstanceName $instance.Name
            $restartError = Restart-WinCertPrivateSqlService -Name $serviceName
            $restarted = $null -eq $restartError
        }
        [pscustomobject]@{
            InstanceName      = $instance.Name
            Outcome           = if ($bound) { 'unbound' } else { 'not_bound' }
            CurrentThumbprint = if ($current) { $current } else { $null }
            Restarted         = $restarted
            RestartError      = $restartError
        } | ConvertTo-Json -Compress
    }
    finally { $hklm.Close() }
}
