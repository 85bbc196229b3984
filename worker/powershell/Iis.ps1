# WinCert Orchestrator: IIS https bindings.
# Target: Windows PowerShell 5.1 on .NET Framework 4.7+ (also runs on PowerShell 7).
# Loaded once per runspace after Common.ps1 (or pre-installed as a module for JEA endpoints).
# Public functions are defined at column 0; helpers shared with other functions are the private
# *-WinCertPrivate* functions of Common.ps1, the others are nested inside the function that uses
# them. The simulator implements the same functions in simulator/commands/iis.py; both must
# produce the same objects, warnings and errors (tests/contract checks names, parameters and
# error ids).
#
# IIS is driven only through Microsoft.Web.Administration (ServerManager, loaded from
# %windir%\System32\inetsrv): no appcmd, no netsh, no WebAdministration drive, and no text is
# ever built from parameter values. A binding's certificate lives in http.sys: non-SNI https
# bindings share the ip:port mapping of their endpoint, SNI bindings (sslFlags bit 1) the
# host:port mapping; ServerManager.CommitChanges writes the mapping (last writer wins).

function Get-WinCertIisBinding {
    <#
    .SYNOPSIS
    Lists every binding of every IIS site as one compact JSON string each.

    .DESCRIPTION
    Keys: SiteName, SiteId, Protocol, BindingInformation, IPAddress ('*', IPv4 or bracketed IPv6
    as written in the binding; '' when the binding information is not ip:port:host, e.g.
    net.tcp), Port (int or null), HostName (as IIS stores it), HostNameAscii (its A-label form,
    lower case), HostNameUnicode (its U-label form; both the stored text when it is not a valid
    IDN), SslFlags (int), CertificateHash (upper-case hex or ''), CertificateStoreName ('' when
    none). The worker filters https bindings with a hash.
    Errors: WinCert.IisNotInstalled.
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param()

    $ErrorActionPreference = 'Stop'

    $manager = Open-WinCertPrivateServerManager -Cmdlet $PSCmdlet
    try {
        foreach ($site in $manager.Sites) {
            foreach ($binding in $site.Bindings) {
                $information = [string]$binding.BindingInformation
                $parts = Split-WinCertPrivateBindingInformation -Information $information
                if ($null -eq $parts) { $parts = @('', $null, '') }
                $forms = ConvertTo-WinCertPrivateIdnHost -HostName ([string]$parts[2])
                if ($null -eq $forms) { $forms = @(([string]$parts[2]).ToLowerInvariant(), [string]$parts[2]) }
                $sslFlags = Get-WinCertPrivateBindingSslFlags -Binding $binding
                $hash = ''
                $storeName = ''
                if ($binding.Protocol -eq 'https') {
                    $hash = Get-WinCertPrivateBindingThumbprint -Binding $binding
                    if ($hash) { $storeName = [string]$binding.CertificateStoreName }
                }
                [pscustomobject]@{
                    SiteName             = [string]$site.Name
                    SiteId               = [long]$site.Id
                    Protocol             = [string]$binding.Protocol
                    BindingInformation   = $information
                    IPAddress            = [string]$parts[0]
                    Port                 = $parts[1]
                    HostName             = [string]$parts[2]
                    HostNameAscii        = [string]$forms[0]
                    HostNameUnicode      = [string]$forms[1]
                    SslFlags             = $sslFlags
                    CertificateHash      = $hash
                    CertificateStoreName = $storeName
                } | ConvertTo-Json -Compress
            }
        }
    }
    finally {
        $manager.Dispose()
    }
}

function Set-WinCertIisBinding {
    <#
    .SYNOPSIS
    Creates or replaces the https binding IPAddress:Port:HostName of one IIS site.

    .DESCRIPTION
    HostName is the A-label form the worker normalised (IDNA 2008 / UTS 46); it is never
    re-normalised here. Checks, in this order, each a terminating error:
    WinCert.IisNotInstalled;
    WinCert.InvalidHostName - HostName is not a valid IDN in its A-label form (e.g. 'xn--zz',
      or a U-label such as 'b<U+00FC>cher.example' instead of 'xn--bcher-kva.example');
    WinCert.InvalidSslFlags - not 0-127; bit 2 (CCS) on any build (a binding to a thumbprint
      from a store is never a central-store binding); bits not allowed on this OS build
      (>= 20348: 1,4,8,16,32,64; >= 17763: 1,4,8; >= 14393: 1,4; older: 1); or bit 1 (SNI) with
      an empty HostName. Messages name the features (SNI, CCS, HTTP/2 off, OCSP stapling off,
      QUIC off, TLS 1.3 over TCP off, legacy TLS off);
    WinCert.WildcardHostNotSupported - a HostName containing '*' on IIS older than 10;
    WinCert.SiteNotFound;
    WinCert.CertificateNotFound - not in LocalMachine\<StorePath>, or without a private key;
    WinCert.BindingConflict - another site has an https binding with the same binding
      information, or one sharing the http.sys endpoint (ip:port without SNI, host:port with
      SNI) served by another certificate; the message names the site. With -AllowTakeover the
      binding is made anyway and each such binding is a warning.
    WinCert.SslMappingShadowed - the http.sys mapping the binding makes would shadow, or be
      shadowed by, another http.sys mapping (IIS binding or orphan): an IP-specific IP:port
      mapping takes precedence over SNI host:port and central-store mappings on its port for
      clients connecting to that IP. With -AllowTakeover the binding is made and each is a
      warning.
    Only the https binding of this site whose binding information equals IPAddress:Port:HostName
    compared in normalised form (IP and host case-insensitive, the host by its A-label form, so
    an existing '*:443:b<U+00FC>cher.example' is the binding '*:443:xn--bcher-kva.example') is
    replaced, keeping the binding information as IIS stores it; certificate, store and the full
    SslFlags are set in one commit. A new binding is written with the A-label form. Output:
    {"Outcome": "created"|"replaced"|"unchanged", "BindingInformation" (as stored),
    "PreviousThumbprint"}; unchanged when the binding already had this certificate, store and
    flags (nothing is written).
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [string]$SiteName,

        [Parameter(Mandatory)]
        [ValidatePattern('^(\*|((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])|\[[0-9A-Fa-f:.]+\])\z')]
        [string]$IPAddress,

        [Parameter(Mandatory)]
        [ValidateRange(1, 65535)]
        [int]$Port,

        [Parameter(Mandatory)]
        [AllowEmptyString()]
        [ValidatePattern('^[^\s:/\x00-\x1F\x7F]*\z')]
        [string]$HostName,

        [Parameter(Mandatory)]
        [int]$SslFlags,

        [Parameter(Mandatory)]
        [ValidatePattern('^[0-9A-Fa-f]{40}\z')]
        [string]$Thumbprint,

        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [string]$StorePath,

        [switch]$AllowTakeover
    )

    $ErrorActionPreference = 'Stop'

    # "MAJOR.MINOR" of IIS from HKLM\SOFTWARE\Microsoft\InetStp (64-bit view); '0.0' if unknown.
    function Get-IisVersion {
        $hklm = [Microsoft.Win32.RegistryKey]::OpenBaseKey(
            [Microsoft.Win32.RegistryHive]::LocalMachine, [Microsoft.Win32.RegistryView]::Registry64)
        try {
            $key = $hklm.OpenSubKey('SOFTWARE\Microsoft\InetStp')
            if ($null -eq $key) { return '0.0' }
            try {
                return ('{0}.{1}' -f [int]$key.GetValue('MajorVersion', 0), [int]$key.GetValue('MinorVersion', 0))
            }
            finally { $key.Close() }
        }
        finally { $hklm.Close() }
    }

    # 'IP:port 0.0.0.0:443' / 'host:port www.contoso.com:443' for messages.
    function Format-Endpoint {
        param(
            [string]$Key
        )
        $kind, $value = $Key.Split([char[]]'=', 2)
        if ($kind -eq 'ipport') { return ('IP:port {0}' -f $value) }
        if ($kind -eq 'ccs') { return ('central certificate store port {0}' -f $value) }
        return ('host:port {0}' -f $value)
    }

    $Thumbprint = $Thumbprint.ToUpperInvariant()
    $information = '{0}:{1}:{2}' -f $IPAddress, $Port, $HostName

    $manager = Open-WinCertPrivateServerManager -Cmdlet $PSCmdlet
    try {
        $hostForms = ConvertTo-WinCertPrivateIdnHost -HostName $HostName
        if ($null -eq $hostForms -or $hostForms[0] -ne $HostName) {
            $message = "HostName '{0}' is not a valid host name in A-label form (IDNA 2008 / UTS 46); the worker sends the A-label form, e.g. 'xn--bcher-kva.example'." -f $HostName
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.InvalidHostName' -Category InvalidArgument -Target $HostName -Exception ([System.ArgumentException]::new($message))))
        }
        $bindingKey = Get-WinCertPrivateBindingKey -Information $information

        # SSL flags: 0-127; never CCS (bit 2: IIS would take the certificate from the central
        # store's file share by host name, not this thumbprint); the bits of this OS build (the
        # peer's table without CCS); then the SNI host rule. Messages name the features.
        $build = [System.Environment]::OSVersion.Version.Build
        if ($build -ge 20348) { $allowed = @(1, 4, 8, 16, 32, 64) }
        elseif ($build -ge 17763) { $allowed = @(1, 4, 8) }
        elseif ($build -ge 14393) { $allowed = @(1, 4) }
        else { $allowed = @(1) }
        # A Hashtable (an [ordered] dictionary would index [int] keys by position).
        $featureBits = @(1, 2, 4, 8, 16, 32, 64)
        $features = @{
            1  = 'SNI'
            2  = 'CCS (Centralized Certificate Store)'
            4  = 'HTTP/2 off'
            8  = 'OCSP stapling off'
            16 = 'QUIC off'
            32 = 'TLS 1.3 over TCP off'
            64 = 'legacy TLS off'
        }
        $named = @(foreach ($bit in $featureBits) { if (($SslFlags -band $bit) -ne 0) { $features[$bit] } })
        $described = if ($named.Count -gt 0) { $named -join ' + ' } else { 'no SNI' }
        $unsupported = @(foreach ($bit in $featureBits) { if (($SslFlags -band $bit) -ne 0 -and $allowed -notcontains $bit) { $features[$bit] } })
        $flagsProblem = $null
        if ($SslFlags -lt 0 -or $SslFlags -gt 127) {
            $flagsProblem = 'SslFlags {0} is not an IIS sslFlags value (0-127).' -f $SslFlags
        }
        elseif (($SslFlags -band 2) -ne 0) {
            $flagsProblem = 'SslFlags {0} ({1}) asks for the Centralized Certificate Store, which serves certificates from a file share by host name and never a certificate from a store by thumbprint; clear bit 2.' -f $SslFlags, $described
        }
        elseif ($unsupported.Count -gt 0) {
            $allowedText = @(foreach ($bit in $allowed) { '{0} ({1})' -f $bit, $features[$bit] }) -join ', '
            $flagsProblem = 'SslFlags {0} ({1}) is not valid on this host (OS build {2}): {3} not supported; allowed bits are {4}.' -f $SslFlags, $described, $build, ($unsupported -join ', '), $allowedText
        }
        elseif (($SslFlags -band 1) -ne 0 -and $HostName.Length -eq 0) {
            $flagsProblem = 'SslFlags {0} sets bit 1 (SNI), which requires a HostName.' -f $SslFlags
        }
        if ($null -ne $flagsProblem) {
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $flagsProblem -ErrorId 'WinCert.InvalidSslFlags' -Category InvalidArgument -Target ([string]$SslFlags) -Exception ([System.ArgumentException]::new($flagsProblem))))
        }

        if ($HostName.Contains('*')) {
            $version = Get-IisVersion
            if ([int]($version.Split('.')[0]) -lt 10) {
                $message = "Wildcard host name '{0}' requires IIS 10.0 or later (this host has IIS {1})." -f $HostName, $version
                $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.WildcardHostNotSupported' -Category InvalidArgument -Target $HostName -Exception ([System.ArgumentException]::new($message))))
            }
        }

        $site = $null
        foreach ($candidate in $manager.Sites) {
            if ($candidate.Name -eq $SiteName) { $site = $candidate; break }
        }
        if ($null -eq $site) {
            $message = "IIS site '{0}' was not found." -f $SiteName
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.SiteNotFound' -Category ObjectNotFound -Target $SiteName -Exception ([System.Management.Automation.ItemNotFoundException]::new($message))))
        }

        # The certificate must be in LocalMachine\<StorePath> with its private key.
        $certificate = Get-WinCertPrivateKeyedCertificate -StorePath $StorePath -Thumbprint $Thumbprint `
            -NoKeyErrorId 'WinCert.CertificateNotFound' -Cmdlet $PSCmdlet

        $existing = $null
        foreach ($binding in $site.Bindings) {
            if ($binding.Protocol -eq 'https' -and (Get-WinCertPrivateBindingKey -Information ([string]$binding.BindingInformation)) -eq $bindingKey) { $existing = $binding; break }
        }
        $previous = $null
        if ($null -ne $existing) {
            $oldHash = Get-WinCertPrivateBindingThumbprint -Binding $existing
            if ($oldHash) { $previous = $oldHash }
            if ((Get-WinCertPrivateBindingSslFlags -Binding $existing) -eq $SslFlags -and $oldHash -eq $Thumbprint -and
                [string]$existing.CertificateStoreName -eq $StorePath) {
                return ([pscustomobject]@{
                        Outcome            = 'unchanged'
                        BindingInformation = [string]$existing.BindingInformation
                        PreviousThumbprint = $previous
                    } | ConvertTo-Json -Compress)
            }
        }

        # Conflicts with other sites (same binding, or same http.sys endpoint with another cert).
        $endpoint = Get-WinCertPrivateEndpointKey -Information $information -Flags $SslFlags
        $conflicts = [System.Collections.Generic.List[object]]::new()
        foreach ($other in $manager.Sites) {
            if ($other.Id -eq $site.Id) { continue }
            foreach ($binding in $other.Bindings) {
                if ($binding.Protocol -ne 'https') { continue }
                $otherInformation = [string]$binding.BindingInformation
                $otherHash = Get-WinCertPrivateBindingThumbprint -Binding $binding
                $otherEndpoint = Get-WinCertPrivateEndpointKey -Information $otherInformation -Flags (Get-WinCertPrivateBindingSslFlags -Binding $binding)
                if ((Get-WinCertPrivateBindingKey -Information $otherInformation) -eq $bindingKey -or ($otherEndpoint -eq $endpoint -and $otherHash -ne $Thumbprint)) {
                    $conflicts.Add([pscustomobject]@{ Site = [string]$other.Name; Information = $otherInformation; Hash = $otherHash })
                }
            }
        }
        if ($conflicts.Count -gt 0 -and -not $AllowTakeover) {
            $first = $conflicts[0]
            $served = if ($first.Hash) { ' (certificate {0})' -f $first.Hash } else { '' }
            $message = "Binding '{0}' conflicts with site '{1}': its https binding '{2}' uses the same {3}{4}. Use -AllowTakeover to bind anyway." -f $information, $first.Site, $first.Information, (Format-Endpoint -Key $endpoint), $served
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.BindingConflict' -Category ResourceExists -Target $information))
        }

        # http.sys mappings (IIS bindings or not, orphans included) that the new mapping would
        # shadow or be shadowed by (Find-WinCertPrivateShadowedMapping).
        $registry = [Microsoft.Win32.RegistryKey]::OpenBaseKey(
            [Microsoft.Win32.RegistryHive]::LocalMachine, [Microsoft.Win32.RegistryView]::Registry64)
        try { $httpSys = Get-WinCertPrivateHttpSysMapping -Root $registry }
        finally { $registry.Close() }
        $shadowTexts = @(foreach ($shadow in (Find-WinCertPrivateShadowedMapping -Key $endpoint -Mappings $httpSys)) {
                $other = $shadow.Mapping
                $served = if ($other.CertificateHash) { ' (certificate {0})' -f $other.CertificateHash } else { '' }
                $client = $endpoint.Substring(7, $endpoint.LastIndexOf(':') - 7)
                if ($shadow.Direction -eq 'shadows') {
                    "its {0} would take precedence over the http.sys {1} mapping{2} for clients connecting to {3}" -f (Format-Endpoint -Key $endpoint), (Format-Endpoint -Key $other.Key), $served, $client
                }
                else {
                    "the http.sys {0} mapping{1} takes precedence over its {2} for clients connecting to {3}" -f (Format-Endpoint -Key $other.Key), $served, (Format-Endpoint -Key $endpoint), $other.Address
                }
            })
        if ($shadowTexts.Count -gt 0 -and -not $AllowTakeover) {
            $message = "Binding '{0}' would change which certificate some clients get: {1}. Use -AllowTakeover to bind deliberately." -f $information, ($shadowTexts -join '; ')
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.SslMappingShadowed' -Category ResourceExists -Target $information))
        }

        # One commit: certificate, store and the full sslFlags value (no second appcmd step).
        $hashBytes = $certificate.GetCertHash()
        if ($null -eq $existing) {
            $binding = $site.Bindings.Add($information, $hashBytes, $StorePath,
                [System.Enum]::ToObject([Microsoft.Web.Administration.SslFlags], $SslFlags))
            $outcome = 'created'
        }
        else {
            $binding = $existing  # its binding information stays as IIS stores it
            $information = [string]$existing.BindingInformation
            $binding.CertificateHash = $hashBytes
            $binding.CertificateStoreName = $StorePath
            $outcome = 'replaced'
        }
        $binding.SetAttributeValue('sslFlags', $SslFlags)
        try {
            $manager.CommitChanges()
        }
        catch {
            $cause = Get-WinCertPrivateInnerException -Exception $_.Exception
            $message = "IIS could not save binding '{0}' of site '{1}': {2}" -f $information, $SiteName, $cause.Message
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.IisCommitFailed' -Category WriteError -Target $information))
        }
        foreach ($conflict in $conflicts) {
            Write-Warning ("Binding '{0}' takes over the {1} from site '{2}' (binding '{3}')." -f $information, (Format-Endpoint -Key $endpoint), $conflict.Site, $conflict.Information)
        }
        foreach ($text in $shadowTexts) {
            Write-Warning ("Binding '{0}': {1}." -f $information, $text)
        }
        [pscustomobject]@{
            Outcome            = $outcome
            BindingInformation = $information
            PreviousThumbprint = $previous
        } | ConvertTo-Json -Compress
    }
    finally {
        $manager.Dispose()
    }
}

function Get-WinCertHttpSysMapping {
    <#
    .SYNOPSIS
    Lists every http.sys SSL certificate mapping as one compact JSON string each, IIS or not.

    .DESCRIPTION
    Read from where http.sys persists its configuration (HKLM\SYSTEM\CurrentControlSet\Services\
    HTTP\Parameters SslBindingInfo, SslSniBindingInfo, SslCcsBindingInfo), never from netsh's
    localized text. Keys: Kind ('ipport' | 'hostnameport' | 'ccs'), Endpoint ('0.0.0.0:443',
    '[::1]:443', 'www.example.test:443', or the port for the central certificate store),
    CertificateHash (upper hex or ''), CertificateStoreName, IisBindings (["<site> <binding
    information>"] of the https bindings that use the mapping; [] for an orphan, or without IIS).
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param()

    $ErrorActionPreference = 'Stop'

    $registry = [Microsoft.Win32.RegistryKey]::OpenBaseKey(
        [Microsoft.Win32.RegistryHive]::LocalMachine, [Microsoft.Win32.RegistryView]::Registry64)
    try { $mappings = Get-WinCertPrivateHttpSysMapping -Root $registry }
    finally { $registry.Close() }
    $users = @{}
    $manager = $null
    try { $manager = Open-WinCertPrivateServerManager -Cmdlet $PSCmdlet } catch { $manager = $null }
    if ($null -ne $manager) {
        try {
            foreach ($site in $manager.Sites) {
                foreach ($binding in $site.Bindings) {
                    if ($binding.Protocol -ne 'https') { continue }
                    $information = [string]$binding.BindingInformation
                    $key = Get-WinCertPrivateEndpointKey -Information $information -Flags (Get-WinCertPrivateBindingSslFlags -Binding $binding)
                    if ($null -eq $key) { continue }
                    if (-not $users.ContainsKey($key)) { $users[$key] = [System.Collections.Generic.List[string]]::new() }
                    $users[$key].Add(('{0} {1}' -f $site.Name, $information))
                }
            }
        }
        finally { $manager.Dispose() }
    }
    foreach ($mapping in $mappings) {
        $endpointText = if ($mapping.Kind -eq 'ccs') { [string]$mapping.Port } else { $mapping.Key.Split([char[]]'=', 2)[1] }
        $bindings = if ($users.ContainsKey($mapping.Key)) { [object[]]$users[$mapping.Key].ToArray() } else { [object[]]@() }
        [pscustomobject]@{
            Kind                 = $mapping.Kind
            Endpoint             = $endpointText
            CertificateHash      = $mapping.CertificateHash
            CertificateStoreName = $mapping.CertificateStoreName
            IisBindings          = $bindings
        } | ConvertTo-Json -Compress
    }
}

function Remove-WinCertIisBinding {
    <#
    .SYNOPSIS
    Removes the https binding IPAddress:Port:HostName of one IIS site.

    .DESCRIPTION
    The binding is found in normalised form (IP and host case-insensitive, the host by its
    A-label form: HostName 'xn--bcher-kva.example' removes a binding stored as
    'b<U+00FC>cher.example'). Output: {"Outcome": "removed"|"already_absent", "Thumbprint"} (the
    certificate the binding had, or null). A missing site is already_absent with the warning "IIS site '<name>' was not
    found; nothing to remove.". The http.sys mapping goes with the binding unless another https
    binding still uses that endpoint. Errors: WinCert.IisNotInstalled.
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [string]$SiteName,

        [Parameter(Mandatory)]
        [ValidatePattern('^(\*|((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])|\[[0-9A-Fa-f:.]+\])\z')]
        [string]$IPAddress,

        [Parameter(Mandatory)]
        [ValidateRange(1, 65535)]
        [int]$Port,

        [Parameter(Mandatory)]
        [AllowEmptyString()]
        [ValidatePattern('^[^\s:/\x00-\x1F\x7F]*\z')]
        [string]$HostName
    )

    $ErrorActionPreference = 'Stop'

    $information = '{0}:{1}:{2}' -f $IPAddress, $Port, $HostName
    $bindingKey = Get-WinCertPrivateBindingKey -Information $information

    $manager = Open-WinCertPrivateServerManager -Cmdlet $PSCmdlet
    try {
        $site = $null
        foreach ($candidate in $manager.Sites) {
            if ($candidate.Name -eq $SiteName) { $site = $candidate; break }
        }
        if ($null -eq $site) {
            Write-Warning ("IIS site '{0}' was not found; nothing to remove." -f $SiteName)
            return ([pscustomobject]@{ Outcome = 'already_absent'; Thumbprint = $null } | ConvertTo-Json -Compress)
        }
        $target = $null
        foreach ($binding in $site.Bindings) {
            if ($binding.Protocol -eq 'https' -and (Get-WinCertPrivateBindingKey -Information ([string]$binding.BindingInformation)) -eq $bindingKey) { $target = $binding; break }
        }
        if ($null -eq $target) {
            return ([pscustomobject]@{ Outcome = 'already_absent'; Thumbprint = $null } | ConvertTo-Json -Compress)
        }
        $thumbprint = Get-WinCertPrivateBindingThumbprint -Binding $target
        if (-not $thumbprint) { $thumbprint = $null }
        # Keep the http.sys mapping (remove the configuration only) while another https binding
        # still uses the same endpoint.
        $information = [string]$target.BindingInformation
        $endpoint = Get-WinCertPrivateEndpointKey -Information $information -Flags (Get-WinCertPrivateBindingSslFlags -Binding $target)
        $shared = $false
        foreach ($other in $manager.Sites) {
            foreach ($binding in $other.Bindings) {
                if ([object]::ReferenceEquals($binding, $target) -or $binding.Protocol -ne 'https') { continue }
                if ($other.Id -eq $site.Id -and (Get-WinCertPrivateBindingKey -Information ([string]$binding.BindingInformation)) -eq $bindingKey) { continue }
                if ((Get-WinCertPrivateEndpointKey -Information ([string]$binding.BindingInformation) -Flags (Get-WinCertPrivateBindingSslFlags -Binding $binding)) -eq $endpoint) {
                    $shared = $true
                }
            }
        }
        $site.Bindings.Remove($target, $shared)
        $manager.CommitChanges()
        [pscustomobject]@{ Outcome = 'removed'; Thumbprint = $thumbprint } | ConvertTo-Json -Compress
    }
    finally {
        $manager.Dispose()
    }
}
