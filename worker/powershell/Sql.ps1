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
    Running or Stopped; '' when missing), Version (the instance's build from
    ...\<id>\Setup PatchLevel, else Version, e.g. '15.0.4430.1'; '' when unknown),
    ServiceSidType (HKLM\SYSTEM\CurrentControlSet\Services\<service> ServiceSidType: 0 none,
    1 unrestricted, 3 restricted). No SQL Server: no output.
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
                    Version        = Get-WinCertPrivateSqlVersion -Root $hklm -InstanceId $instanceId
                    ServiceSidType = Get-WinCertPrivateServiceSidType -Root $hklm -ServiceName $serviceName
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
    2. An ECDSA key on an instance whose version cannot use one is WinCert.SqlEccNotSupported,
       before anything changes (the rule: see Test-WinCertPrivateSqlEccSupport in Common.ps1).
    3. Grants Read on that file, by SID, to each account SQL Server may load the key as, unless
       it can already read it: the service's start account (Win32_Service.StartName; the
       well-known LocalSystem, LocalService and NetworkService by their SIDs S-1-5-18/19/20,
       never by an English name that localized Windows does not have), and, when the service's
       SID type is unrestricted (1) or restricted (3), its service SID NT SERVICE\<service>
       (S-1-5-80-..., computed from the service name). Failure is WinCert.KeyAclFailed and
       nothing has changed.
    3. Writes the Certificate value (lower case) unless it already names the certificate.
    4. With -RestartService, stops the service (and its dependents) and starts it again, then
       the dependents that were running. A failure is reported in RestartError, not thrown.
    Output: {"InstanceName", "Outcome": "bound"|"unchanged", "Restarted", "RestartError",
    "KeyAccess": [{"Account", "Sid", "Granted"}]} (Granted: this call added the rule; false: the
    account could already read the key); unchanged when neither the ACL nor the registry value had
    to change.
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

        # 1. An ECDSA key only where this instance's version can use it (nothing changed yet).
        $version = Get-WinCertPrivateSqlVersion -Root $hklm -InstanceId $instance.Id
        $isEcdsa = $false
        $ecKey = [System.Security.Cryptography.X509Certificates.ECDsaCertificateExtensions]::GetECDsaPublicKey($certificate)
        if ($null -ne $ecKey) { $isEcdsa = $true; $ecKey.Dispose() }
        if ($isEcdsa) {
            $eccProblem = Test-WinCertPrivateSqlEccSupport -Version $version
            if ($null -ne $eccProblem) {
                $message = "Certificate {0} has an ECDSA key, which SQL Server instance '{1}' cannot use: {2}. Bind an RSA certificate, or upgrade the instance." -f $Thumbprint, $instance.Name, $eccProblem
                $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.SqlEccNotSupported' -Category InvalidOperation -Target $Thumbprint))
            }
        }

        # 2. Read access, by SID, for the start account and the service SID (nothing else has
        #    changed if this fails).
        $service = @(Get-CimInstance -ClassName Win32_Service | Where-Object { $_.Name -eq $serviceName })[0]
        $startName = if ($null -ne $service) { [string]$service.StartName } else { '' }
        $aclProblem = $null
        $access = [System.Collections.Generic.List[object]]::new()
        $principals = [System.Collections.Generic.List[System.Security.Principal.SecurityIdentifier]]::new()
        try {
            if (-not $startName) { throw ('the service {0} has no account' -f $serviceName) }
            $principals.Add((ConvertTo-WinCertPrivateAccountSid -StartName $startName))
            $sidType = Get-WinCertPrivateServiceSidType -Root $hklm -ServiceName $serviceName
            if ($sidType -eq 1 -or $sidType -eq 3) {
                $serviceSid = Get-WinCertPrivateServiceSid -ServiceName $serviceName
                if (-not $principals.Contains($serviceSid)) { $principals.Add($serviceSid) }
            }
            $read = [System.Security.AccessControl.FileSystemRights]::Read
            $canRead = {
                param($Acl, $Sid)
                foreach ($rule in $Acl.GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier])) {
                    if ($rule.AccessControlType -eq 'Allow' -and $rule.IdentityReference -eq $Sid -and
                        ($rule.FileSystemRights -band $read) -eq $read) { return $true }
                }
                return $false
            }
            $acl = Get-Acl -LiteralPath $keyFile
            $missing = @($principals | Where-Object { -not (& $canRead $acl $_) })
            if ($missing.Count -gt 0) {
                foreach ($sid in $missing) {
                    $acl.AddAccessRule([System.Security.AccessControl.FileSystemAccessRule]::new(
                            $sid, $read, [System.Security.AccessControl.AccessControlType]::Allow))
                }
                Set-Acl -LiteralPath $keyFile -AclObject $acl
                $after = Get-Acl -LiteralPath $keyFile
                foreach ($sid in $missing) {
                    if (-not (& $canRead $after $sid)) { throw ('the rule for {0} is not in the ACL' -f $sid.Value) }
                }
            }
            foreach ($sid in $principals) {
                $name = $sid.Value
                try { $name = $sid.Translate([System.Security.Principal.NTAccount]).Value } catch { $name = $sid.Value }
                $access.Add([pscustomobject]@{ Account = $name; Sid = $sid.Value; Granted = [bool]($missing -contains $sid) })
            }
        }
        catch {
            $aclProblem = $_.Exception.Message
        }
        if ($null -ne $aclProblem) {
            $message = 'Cannot grant Read on the private key of certificate {0} ({1}): {2}.' -f $Thumbprint, $keyFile, $aclProblem.TrimEnd('.')
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.KeyAclFailed' -Category PermissionDenied -Target $Thumbprint))
        }
        $granted = @($access | Where-Object { $_.Granted }).Count -gt 0
        foreach ($entry in $access) {
            if ($entry.Granted) { Write-Verbose ('Granted Read on {0} to {1} ({2}).' -f $keyFile, $entry.Account, $entry.Sid) }
            else { Write-Verbose ('{0} ({1}) can already read {2}.' -f $entry.Account, $entry.Sid, $keyFile) }
        }

        # 3. The registry value.
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

        # 4. The restart.
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
            KeyAccess    = [object[]]$access.ToArray()
        } | ConvertTo-Json -Compress -Depth 3
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
