# WinCert Orchestrator: PRIVATE helpers shared by the public functions of the other library files.
# Target: Windows PowerShell 5.1 on .NET Framework 4.7+ (also runs on PowerShell 7). One part
# needs 4.7.2: DSA private keys are opened through DSACertificateExtensions (.NET Framework
# 4.7.2+). The DSA branches look that type up when they run (Get-WinCertPrivateDsaExtension)
# and degrade clearly on 4.7 / 4.7.1: opening a DSA key (to delete it, or to name its
# container) fails with a PlatformNotSupportedException saying so, which the callers report as
# a warning; the usability check of a DSA key warns and relies on HasPrivateKey. RSA and ECDSA
# keys (RSA/ECDsaCertificateExtensions, .NET 4.6+) and everything else need only 4.7.
#
# Nothing here is public. Every function of this file is named <ApprovedVerb>-WinCertPrivate<Noun>
# and only that naming marks a private helper: the worker never calls one, the simulator has no
# counterpart (tests/contract), and the JEA module (deploy/jea/build.py) neither exports them nor
# makes them visible. Public functions are defined in the other files; a helper used by one public
# function only stays nested inside it.
#
# Load order: the worker sends this file first (worker/powershell list_scripts, used by
# worker/remote/library.py), and the JEA module puts it first in the .psm1. PowerShell resolves a
# function name when the call runs, so any order works as long as every file is loaded before the
# first call, which the worker guarantees (all files are loaded when the session opens).
#
# Scope: the helpers are called only from public functions, which set $ErrorActionPreference =
# 'Stop'. A called function runs in a child scope of its caller (in a JEA module too: caller and
# helper share the module's session state), so helpers inherit that preference exactly as the
# nested helpers they replace did. Everything else a helper needs is a parameter: helpers that end
# the call with a terminating error take the caller's $PSCmdlet as -Cmdlet.

# An ErrorRecord for $PSCmdlet.ThrowTerminatingError; the exception defaults to an
# InvalidOperationException with $Message.
function New-WinCertPrivateErrorRecord {
    param(
        [string]$Message,
        [string]$ErrorId,
        [System.Management.Automation.ErrorCategory]$Category,
        [object]$Target,
        [System.Exception]$Exception
    )
    if ($null -eq $Exception) { $Exception = [System.InvalidOperationException]::new($Message) }
    return [System.Management.Automation.ErrorRecord]::new($Exception, $ErrorId, $Category, $Target)
}

# The exception a .NET method threw, without PowerShell's MethodInvocationException wrappers.
function Get-WinCertPrivateInnerException {
    param(
        [System.Exception]$Exception
    )
    $cause = $Exception
    while ($cause -is [System.Management.Automation.MethodInvocationException] -and $null -ne $cause.InnerException) {
        $cause = $cause.InnerException
    }
    return $cause
}

# LocalMachine\<Name> opened with $Flags; an error opening it is the caller's to handle.
function Open-WinCertPrivateStore {
    param(
        [string]$Name,
        [System.Security.Cryptography.X509Certificates.OpenFlags]$Flags
    )
    $store = [System.Security.Cryptography.X509Certificates.X509Store]::new(
        $Name, [System.Security.Cryptography.X509Certificates.StoreLocation]::LocalMachine)
    $store.Open($Flags)
    return $store
}

# LocalMachine\<StorePath>, the store a public function works on, opened with $Flags. A store
# that cannot be opened ends the caller's call: WinCert.StoreNotFound for ERROR_FILE_NOT_FOUND /
# ERROR_PATH_NOT_FOUND (as a Win32 code or an HRESULT), else WinCert.StoreOpenFailed (the store
# exists but cannot be opened, e.g. access denied).
function Open-WinCertPrivateTargetStore {
    param(
        [string]$StorePath,
        [System.Security.Cryptography.X509Certificates.OpenFlags]$Flags,
        [System.Management.Automation.PSCmdlet]$Cmdlet
    )
    $store = $null
    $openError = $null
    try {
        $store = Open-WinCertPrivateStore -Name $StorePath -Flags $Flags
    }
    catch {
        $openError = $_
    }
    if ($null -eq $openError) { return $store }
    $cause = Get-WinCertPrivateInnerException -Exception $openError.Exception
    if (($cause.HResult -band 0xFFFF) -in 2, 3) {
        $message = "Certificate store '{0}' was not found in LocalMachine." -f $StorePath
        $Cmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.StoreNotFound' `
                    -Category ObjectNotFound -Target $StorePath `
                    -Exception ([System.Management.Automation.ItemNotFoundException]::new($message))))
    }
    $message = "Certificate store '{0}' could not be opened in LocalMachine: {1}" -f $StorePath, $cause.Message
    $Cmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.StoreOpenFailed' `
                -Category OpenError -Target $StorePath `
                -Exception ([System.InvalidOperationException]::new($message, $cause))))
}

# A fresh read of LocalMachine\<StorePath> (not a handle the caller changed): the certificate
# with $Thumbprint, or $null.
function Find-WinCertPrivateStoredCertificate {
    param(
        [string]$StorePath,
        [string]$Thumbprint
    )
    $fresh = Open-WinCertPrivateStore -Name $StorePath -Flags 'ReadOnly, OpenExistingOnly'
    try {
        foreach ($certificate in $fresh.Certificates) {
            if ($certificate.Thumbprint -eq $Thumbprint) { return $certificate }
        }
        return $null
    }
    finally {
        $fresh.Close()
    }
}

# The certificate $Thumbprint of LocalMachine\<StorePath>, which must have its private key (to be
# bound to IIS or SQL Server). A store that cannot be opened or a certificate that is not there
# ends the caller's call with WinCert.CertificateNotFound; a certificate without a private key
# with $NoKeyErrorId.
function Get-WinCertPrivateKeyedCertificate {
    param(
        [string]$StorePath,
        [string]$Thumbprint,
        [string]$NoKeyErrorId,
        [System.Management.Automation.PSCmdlet]$Cmdlet
    )
    $certificate = $null
    $store = $null
    try {
        $store = Open-WinCertPrivateStore -Name $StorePath -Flags 'ReadOnly, OpenExistingOnly'
    }
    catch {
        $store = $null
    }
    if ($null -ne $store) {
        try {
            $found = $store.Certificates.Find(
                [System.Security.Cryptography.X509Certificates.X509FindType]::FindByThumbprint, $Thumbprint, $false)
            if ($found.Count -gt 0) { $certificate = $found[0] }
        }
        finally { $store.Close() }
    }
    if ($null -eq $certificate) {
        $message = 'Certificate {0} was not found in LocalMachine\{1}.' -f $Thumbprint, $StorePath
        $Cmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.CertificateNotFound' `
                    -Category ObjectNotFound -Target $Thumbprint `
                    -Exception ([System.Management.Automation.ItemNotFoundException]::new($message))))
    }
    if (-not $certificate.HasPrivateKey) {
        $message = 'Certificate {0} in LocalMachine\{1} has no private key.' -f $Thumbprint, $StorePath
        $Cmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId $NoKeyErrorId `
                    -Category ObjectNotFound -Target $Thumbprint `
                    -Exception ([System.Management.Automation.ItemNotFoundException]::new($message))))
    }
    return $certificate
}

# The registered provider called $Name (trimmed, case-insensitive) as {Name, Kind: CSP | KSP,
# Type}. CSPs are the subkeys of HKLM:\SOFTWARE\Microsoft\Cryptography\Defaults\Provider, KSPs the
# CNG providers that register the key storage interface (UM\00010001). A name that is not
# registered ends the caller's call with WinCert.ProviderNotFound.
function Resolve-WinCertPrivateCryptoProvider {
    param(
        [string]$Name,
        [System.Management.Automation.PSCmdlet]$Cmdlet
    )
    $wanted = $Name.Trim()
    $cspRoot = 'HKLM:\SOFTWARE\Microsoft\Cryptography\Defaults\Provider'
    if (Test-Path -LiteralPath $cspRoot) {
        foreach ($key in (Get-ChildItem -LiteralPath $cspRoot)) {
            if ($key.PSChildName.Trim() -ieq $wanted) {
                return [pscustomobject]@{ Name = $key.PSChildName; Kind = 'CSP'; Type = [int]$key.GetValue('Type', 1) }
            }
        }
    }
    $cngRoot = 'HKLM:\SYSTEM\CurrentControlSet\Control\Cryptography\Providers'
    if (Test-Path -LiteralPath $cngRoot) {
        foreach ($key in (Get-ChildItem -LiteralPath $cngRoot)) {
            if ($key.PSChildName.Trim() -ieq $wanted -and
                (Test-Path -LiteralPath (Join-Path -Path $key.PSPath -ChildPath 'UM\00010001'))) {
                return [pscustomobject]@{ Name = $key.PSChildName; Kind = 'KSP'; Type = 0 }
            }
        }
    }
    $message = "Cryptographic provider '{0}' is not registered on this host (Get-WinCertHostInfo lists the installed CSPs and KSPs)." -f $wanted
    $Cmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.ProviderNotFound' `
                -Category ObjectNotFound -Target $wanted `
                -Exception ([System.Management.Automation.ItemNotFoundException]::new($message))))
}

# [System.Security.Cryptography.X509Certificates.DSACertificateExtensions] (.NET Framework
# 4.7.2+, and PowerShell 7), or $null on .NET Framework 4.7 / 4.7.1 (see the header).
function Get-WinCertPrivateDsaExtension {
    return ('System.Security.Cryptography.X509Certificates.DSACertificateExtensions' -as [type])
}

# RSA, ECDSA, DSA or the public key's OID.
function Get-WinCertPrivateKeyAlgorithm {
    param(
        [System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate
    )
    $oid = $Certificate.PublicKey.Oid.Value
    switch ($oid) {
        '1.2.840.113549.1.1.1' { return 'RSA' }
        '1.2.840.10045.2.1' { return 'ECDSA' }
        '1.2.840.10040.4.1' { return 'DSA' }
        default { return $oid }
    }
}

# The private key object of a certificate (CNG or CryptoAPI; RSA, ECDSA or DSA), or $null. The
# caller disposes it. A DSA key on .NET Framework before 4.7.2 throws a
# PlatformNotSupportedException that says so.
function Get-WinCertPrivateCertificateKey {
    param(
        [System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate
    )
    switch (Get-WinCertPrivateKeyAlgorithm -Certificate $Certificate) {
        'RSA' { return [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPrivateKey($Certificate) }
        'ECDSA' { return [System.Security.Cryptography.X509Certificates.ECDsaCertificateExtensions]::GetECDsaPrivateKey($Certificate) }
        'DSA' {
            $dsaExtension = Get-WinCertPrivateDsaExtension
            if ($null -eq $dsaExtension) {
                throw [System.PlatformNotSupportedException]::new(('The DSA private key of certificate {0} cannot be opened: that needs .NET Framework 4.7.2 or later (DSACertificateExtensions), and this host has an older version.' -f $Certificate.Thumbprint))
            }
            return $dsaExtension::GetDSAPrivateKey($Certificate)
        }
    }
    return $null
}

# Whether the certificate's private key signs data its public key verifies.
function Test-WinCertPrivateKeyUsable {
    param(
        [System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate
    )
    $probe = [System.Text.Encoding]::ASCII.GetBytes('WinCert Orchestrator key check')
    $sha256 = [System.Security.Cryptography.HashAlgorithmName]::SHA256
    $privateKey = $null
    $publicKey = $null
    try {
        switch (Get-WinCertPrivateKeyAlgorithm -Certificate $Certificate) {
            'RSA' {
                # SHA-1: keys in a PROV_RSA_FULL CSP (where a PKCS#12 import without a provider
                # puts RSA keys) cannot sign SHA-256 through RSACryptoServiceProvider
                # ("Invalid algorithm specified"); this is a usability probe, not a signature.
                $privateKey = [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPrivateKey($Certificate)
                $publicKey = [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPublicKey($Certificate)
                if ($null -eq $privateKey) { return $false }
                $sha1 = [System.Security.Cryptography.HashAlgorithmName]::SHA1
                $pkcs1 = [System.Security.Cryptography.RSASignaturePadding]::Pkcs1
                $signature = $privateKey.SignData($probe, $sha1, $pkcs1)
                return [bool]$publicKey.VerifyData($probe, $signature, $sha1, $pkcs1)
            }
            'ECDSA' {
                $privateKey = [System.Security.Cryptography.X509Certificates.ECDsaCertificateExtensions]::GetECDsaPrivateKey($Certificate)
                $publicKey = [System.Security.Cryptography.X509Certificates.ECDsaCertificateExtensions]::GetECDsaPublicKey($Certificate)
                if ($null -eq $privateKey) { return $false }
                $signature = $privateKey.SignData($probe, $sha256)
                return [bool]$publicKey.VerifyData($probe, $signature, $sha256)
            }
            'DSA' {
                # FIPS 186-2 DSA keys sign only SHA-1 digests; opening the key is the check. Before
                # .NET Framework 4.7.2 it cannot be opened: a warning, and HasPrivateKey decides.
                $dsaExtension = Get-WinCertPrivateDsaExtension
                if ($null -eq $dsaExtension) {
                    Write-Warning ('The DSA private key of certificate {0} was not checked: opening it needs .NET Framework 4.7.2 or later (DSACertificateExtensions), and this host has an older version.' -f $Certificate.Thumbprint)
                    return [bool]$Certificate.HasPrivateKey
                }
                $privateKey = $dsaExtension::GetDSAPrivateKey($Certificate)
                return ($null -ne $privateKey)
            }
            default { return [bool]$Certificate.HasPrivateKey }
        }
    }
    catch {
        return $false
    }
    finally {
        if ($null -ne $privateKey) { $privateKey.Dispose() }
        if ($null -ne $publicKey) { $publicKey.Dispose() }
    }
}

# Deletes the key container of a certificate's private key (CNG key or CryptoAPI container, found
# through the certificate); nothing when it has none. The caller decides that nothing else refers
# to the container.
function Remove-WinCertPrivateCertificateKey {
    param(
        [System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate
    )
    $key = Get-WinCertPrivateCertificateKey -Certificate $Certificate
    if ($null -eq $key) { return }
    try {
        if ($key -is [System.Security.Cryptography.RSACng] -or $key -is [System.Security.Cryptography.ECDsaCng] -or
            $key -is [System.Security.Cryptography.DSACng]) {
            $key.Key.Delete()
            $key = $null
        }
        elseif ($key -is [System.Security.Cryptography.ICspAsymmetricAlgorithm]) {
            $info = $key.CspKeyContainerInfo
            $parameters = [System.Security.Cryptography.CspParameters]::new($info.ProviderType, $info.ProviderName, $info.KeyContainerName)
            $parameters.Flags = [System.Security.Cryptography.CspProviderFlags]'UseExistingKey, UseMachineKeyStore'
            if ($key -is [System.Security.Cryptography.RSA]) {
                $doomed = [System.Security.Cryptography.RSACryptoServiceProvider]::new($parameters)
            }
            else {
                $doomed = [System.Security.Cryptography.DSACryptoServiceProvider]::new($parameters)
            }
            $doomed.PersistKeyInCsp = $false
            $doomed.Clear()
        }
    }
    finally {
        if ($null -ne $key) { $key.Dispose() }
    }
}

# One argument for a Windows command line, quoted and escaped by the MSVCRT / CommandLineToArgvW
# rules (backslashes before a quote doubled, quotes escaped, empty = ""). Used instead of
# `& tool.exe @args` because Windows PowerShell 5.1 drops empty arguments and does not escape
# embedded quotes.
function ConvertTo-WinCertPrivateCommandLineArgument {
    param(
        [AllowEmptyString()]
        [string]$Value
    )
    $special = [char[]]@([char]32, [char]9, [char]10, [char]11, [char]34)
    if ($Value.Length -gt 0 -and $Value.IndexOfAny($special) -lt 0) { return $Value }
    $backslash = [char]92
    $builder = [System.Text.StringBuilder]::new()
    [void]$builder.Append([char]34)
    $pending = 0
    foreach ($character in $Value.ToCharArray()) {
        if ($character -eq $backslash) {
            $pending++
            continue
        }
        if ($character -eq [char]34) {
            [void]$builder.Append($backslash, (2 * $pending) + 1)
        }
        elseif ($pending -gt 0) {
            [void]$builder.Append($backslash, $pending)
        }
        [void]$builder.Append($character)
        $pending = 0
    }
    [void]$builder.Append($backslash, 2 * $pending)
    [void]$builder.Append([char]34)
    return $builder.ToString()
}

# Runs an executable with an argument array (each element one argv entry); returns {ExitCode,
# Output}. Standard input is closed so that a prompt ends instead of waiting forever.
function Invoke-WinCertPrivateNativeCommand {
    param(
        [string]$FilePath,
        [AllowEmptyString()]
        [string[]]$ArgumentList,
        [int]$TimeoutSeconds = 300
    )
    $quoted = [System.Collections.Generic.List[string]]::new()
    foreach ($argument in $ArgumentList) { $quoted.Add((ConvertTo-WinCertPrivateCommandLineArgument -Value $argument)) }
    $startInfo = [System.Diagnostics.ProcessStartInfo]::new()
    $startInfo.FileName = $FilePath
    $startInfo.Arguments = $quoted -join ' '
    $startInfo.UseShellExecute = $false
    $startInfo.CreateNoWindow = $true
    $startInfo.RedirectStandardInput = $true
    $startInfo.RedirectStandardOutput = $true
    $startInfo.RedirectStandardError = $true
    $process = [System.Diagnostics.Process]::Start($startInfo)
    try {
        $process.StandardInput.Close()
        $stdout = $process.StandardOutput.ReadToEndAsync()
        $stderr = $process.StandardError.ReadToEndAsync()
        if (-not $process.WaitForExit($TimeoutSeconds * 1000)) {
            $process.Kill()
            throw ('{0} did not finish within {1} seconds' -f [System.IO.Path]::GetFileName($FilePath), $TimeoutSeconds)
        }
        $process.WaitForExit()
        return [pscustomobject]@{ ExitCode = $process.ExitCode; Output = ($stdout.Result + $stderr.Result) }
    }
    finally {
        $process.Dispose()
    }
}

# ServerManager from %windir%\System32\inetsrv. Without IIS the caller's call ends with
# WinCert.IisNotInstalled.
function Open-WinCertPrivateServerManager {
    param(
        [System.Management.Automation.PSCmdlet]$Cmdlet
    )
    $inetsrv = Join-Path -Path $env:windir -ChildPath 'System32\inetsrv'
    $assembly = Join-Path -Path $inetsrv -ChildPath 'Microsoft.Web.Administration.dll'
    $config = Join-Path -Path $inetsrv -ChildPath 'config\applicationHost.config'
    if (-not (Test-Path -LiteralPath $assembly -PathType Leaf) -or
        -not (Test-Path -LiteralPath $config -PathType Leaf)) {
        $message = 'IIS is not installed on this host (Microsoft.Web.Administration is not available).'
        $Cmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.IisNotInstalled' `
                    -Category NotInstalled -Target $null -Exception ([System.IO.FileNotFoundException]::new($message))))
    }
    $null = [System.Reflection.Assembly]::LoadFrom($assembly)
    return (New-Object -TypeName 'Microsoft.Web.Administration.ServerManager')
}

# The two forms of a host header, @(A-label form in lower case, U-label form), or $null when it
# is not a valid internationalized host name. [System.Globalization.IdnMapping] with
# UseStd3AsciiRules and without AllowUnassigned: on .NET Framework 4.5+ / Windows 8+ it calls the
# OS's IdnToAscii/IdnToUnicode, which apply UTS 46 non-transitional processing (IDNA 2008:
# 'strasse' is not 'stra<U+00DF>e'; invalid A-labels such as 'xn--zz' are refused). The worker
# normalises with the Python `idna` library (UTS 46, non-transitional, STD3 rules) before the
# call; this only re-derives the forms of names IIS already stores, never re-normalises a name
# the worker sent (docs/idna.md; tests/contract compares the simulator's model of it on a
# corpus). A leading '*.' wildcard label is kept as it is. Mirrors idn_forms in
# simulator/windows/iis.py.
function ConvertTo-WinCertPrivateIdnHost {
    param(
        [string]$HostName
    )
    if ([string]::IsNullOrEmpty($HostName)) { return , @('', '') }
    $prefix = ''
    $body = $HostName
    if ($body.StartsWith('*.')) { $prefix = '*.'; $body = $body.Substring(2) }
    $mapping = [System.Globalization.IdnMapping]::new()
    $mapping.UseStd3AsciiRules = $true
    $mapping.AllowUnassigned = $false
    try {
        $ascii = $mapping.GetAscii($body).ToLowerInvariant()
        $unicode = $mapping.GetUnicode($ascii)
    }
    catch {
        # ArgumentException (invalid name), wrapped by PowerShell in a MethodInvocationException
        return $null
    }
    return , @(($prefix + $ascii), ($prefix + $unicode))
}

# ip:port:host -> @(ip, port, host), bracket-aware (the host never contains ':'); $null when the
# text is not of that form. Mirrors split_binding_information in simulator/windows/iis.py.
function Split-WinCertPrivateBindingInformation {
    param(
        [string]$Information
    )
    $hostSep = $Information.LastIndexOf(':')
    if ($hostSep -lt 0) { return $null }
    $portSep = if ($hostSep -gt 0) { $Information.LastIndexOf(':', $hostSep - 1) } else { -1 }
    if ($portSep -lt 1) { return $null }
    $ip = $Information.Substring(0, $portSep)
    $portText = $Information.Substring($portSep + 1, $hostSep - $portSep - 1)
    $hostName = $Information.Substring($hostSep + 1)
    if ($portText -notmatch '^[0-9]+\z') { return $null }
    if ($ip.Contains(':') -and -not ($ip.StartsWith('[') -and $ip.EndsWith(']'))) { return $null }
    return , @($ip, [int]$portText, $hostName)
}

# Binding information in the form two bindings are compared in: 'ip:port:<A-label host>' in
# lower case, so '*:443:b<U+00FC>cher.example' and '*:443:xn--bcher-kva.example' are one binding
# (mirrors binding_key in simulator/windows/iis.py). Text that is not ip:port:host, or a host
# that is not a valid IDN, compares by its lower-case text.
function Get-WinCertPrivateBindingKey {
    param(
        [string]$Information
    )
    $parts = Split-WinCertPrivateBindingInformation -Information $Information
    if ($null -eq $parts) { return $Information.ToLowerInvariant() }
    $forms = ConvertTo-WinCertPrivateIdnHost -HostName $parts[2]
    $hostKey = if ($null -ne $forms) { $forms[0] } else { $parts[2].ToLowerInvariant() }
    return ('{0}:{1}:{2}' -f $parts[0].ToLowerInvariant(), $parts[1], $hostKey)
}

# The http.sys mapping an https binding uses (mirrors endpoint_of in simulator/windows/iis.py):
# 'hostnameport=<host>:<port>' with SNI (bit 1 of $Flags; the host in its A-label form), else
# 'ipport=<ip>:<port>' ('*' = 0.0.0.0, IPv6 in brackets, canonical text); $null when the binding
# information is not ip:port:host.
function Get-WinCertPrivateEndpointKey {
    param(
        [string]$Information,
        [int]$Flags
    )
    $hostSep = $Information.LastIndexOf(':')
    if ($hostSep -lt 1) { return $null }
    $portSep = $Information.LastIndexOf(':', $hostSep - 1)
    if ($portSep -lt 1) { return $null }
    $ip = $Information.Substring(0, $portSep)
    $portText = $Information.Substring($portSep + 1, $hostSep - $portSep - 1)
    $hostName = $Information.Substring($hostSep + 1)
    if ($portText -notmatch '^[0-9]+\z') { return $null }
    $portNumber = [int]$portText
    if (($Flags -band 1) -ne 0) {
        $forms = ConvertTo-WinCertPrivateIdnHost -HostName $hostName
        $hostKey = if ($null -ne $forms) { $forms[0] } else { $hostName.ToLowerInvariant() }
        return ('hostnameport={0}:{1}' -f $hostKey, $portNumber)
    }
    if ($ip -eq '*') { return ('ipport=0.0.0.0:{0}' -f $portNumber) }
    $inner = $ip
    if ($ip.StartsWith('[') -and $ip.EndsWith(']')) { $inner = $ip.Substring(1, $ip.Length - 2) }
    $address = $null
    if ([System.Net.IPAddress]::TryParse($inner, [ref]$address)) {
        if ($address.AddressFamily -eq [System.Net.Sockets.AddressFamily]::InterNetworkV6) {
            return ('ipport=[{0}]:{1}' -f $address.ToString(), $portNumber)
        }
        return ('ipport={0}:{1}' -f $address.ToString(), $portNumber)
    }
    return ('ipport={0}:{1}' -f $ip.ToLowerInvariant(), $portNumber)
}

# The build of a SQL Server instance, from HKLM\SOFTWARE\Microsoft\Microsoft SQL Server\<id>\Setup:
# PatchLevel (the installed cumulative update, e.g. '15.0.4430.1'), else Version; '' if unknown.
function Get-WinCertPrivateSqlVersion {
    param(
        [Microsoft.Win32.RegistryKey]$Root,
        [string]$InstanceId
    )
    $setup = $Root.OpenSubKey(('SOFTWARE\Microsoft\Microsoft SQL Server\{0}\Setup' -f $InstanceId))
    if ($null -eq $setup) { return '' }
    try {
        $value = [string]$setup.GetValue('PatchLevel', '')
        if (-not $value) { $value = [string]$setup.GetValue('Version', '') }
        return $value.Trim()
    }
    finally { $setup.Close() }
}

# Why a SQL Server instance of this version cannot use an ECDSA certificate for TLS, or $null
# when it can. The rule (one table, also in worker/jobs/winsql.py and simulator/windows/sql.py;
# tests/contract compares them): SQL Server 2022 (major version 16) and later. Sources:
# Microsoft's "Certificate requirements for SQL Server" asks for a legacy CSP key created with
# KeySpec AT_KEYEXCHANGE, which an ECDSA key (CNG only) never is; no Microsoft page reachable to
# this project names a SQL Server 2019 cumulative update that adds ECDSA, so 2019 (15.x) and
# earlier are refused, as is an instance whose version cannot be read.
function Test-WinCertPrivateSqlEccSupport {
    param(
        [string]$Version
    )
    $eccMinimumMajor = 16
    $parsed = $null
    if (-not [System.Version]::TryParse($Version, [ref]$parsed)) {
        return 'its version could not be read'
    }
    if ($parsed.Major -lt $eccMinimumMajor) {
        return ('it is version {0}; ECDSA certificates need SQL Server 2022 (16.x) or later' -f $Version)
    }
    return $null
}

# The SID of a service's start account (Win32_Service.StartName). The well-known accounts by SID,
# whatever the language of Windows: LocalSystem S-1-5-18, LocalService S-1-5-19, NetworkService
# S-1-5-20 (matched by the name after the last '\', which StartName keeps in English); virtual
# accounts 'NT SERVICE\<service>' by their computed service SID; anything else ('.\user',
# 'DOMAIN\user', 'user@domain') through NTAccount.Translate (throws when it cannot).
function ConvertTo-WinCertPrivateAccountSid {
    param(
        [string]$StartName
    )
    $name = $StartName.Trim()
    $domain = ''
    $user = $name
    $separator = $name.LastIndexOf('\')
    if ($separator -ge 0) { $domain = $name.Substring(0, $separator); $user = $name.Substring($separator + 1) }
    switch ($user.ToUpperInvariant()) {
        'LOCALSYSTEM' { return [System.Security.Principal.SecurityIdentifier]::new('S-1-5-18') }
        'SYSTEM' { if ($domain) { return [System.Security.Principal.SecurityIdentifier]::new('S-1-5-18') } }
        'LOCALSERVICE' { return [System.Security.Principal.SecurityIdentifier]::new('S-1-5-19') }
        'LOCAL SERVICE' { return [System.Security.Principal.SecurityIdentifier]::new('S-1-5-19') }
        'NETWORKSERVICE' { return [System.Security.Principal.SecurityIdentifier]::new('S-1-5-20') }
        'NETWORK SERVICE' { return [System.Security.Principal.SecurityIdentifier]::new('S-1-5-20') }
    }
    if ($domain -ieq 'NT SERVICE') { return (Get-WinCertPrivateServiceSid -ServiceName $user) }
    $account = ConvertTo-WinCertPrivateAccountName -StartName $name
    return [System.Security.Principal.NTAccount]::new($account).Translate([System.Security.Principal.SecurityIdentifier])
}

# The service SID of a service (NT SERVICE\<name>): S-1-5-80- followed by the SHA-1 of the
# upper-case service name in UTF-16LE as five little-endian 32-bit sub-authorities (what
# 'sc.exe showsid' prints; needs no name lookup, so no language dependence).
function Get-WinCertPrivateServiceSid {
    param(
        [string]$ServiceName
    )
    $sha1 = [System.Security.Cryptography.SHA1]::Create()
    try { $hash = $sha1.ComputeHash([System.Text.Encoding]::Unicode.GetBytes($ServiceName.ToUpperInvariant())) }
    finally { $sha1.Dispose() }
    $parts = @(for ($i = 0; $i -lt 20; $i += 4) { [System.BitConverter]::ToUInt32($hash, $i) })
    return [System.Security.Principal.SecurityIdentifier]::new('S-1-5-80-' + ($parts -join '-'))
}

# A service's SID type: HKLM\SYSTEM\CurrentControlSet\Services\<name> ServiceSidType
# (0 none, 1 unrestricted, 3 restricted; 0 when absent).
function Get-WinCertPrivateServiceSidType {
    param(
        [Microsoft.Win32.RegistryKey]$Root,
        [string]$ServiceName
    )
    $key = $Root.OpenSubKey(('SYSTEM\CurrentControlSet\Services\{0}' -f $ServiceName))
    if ($null -eq $key) { return 0 }
    try { return [int]$key.GetValue('ServiceSidType', 0) }
    finally { $key.Close() }
}

# Every http.sys SSL certificate mapping, read from where http.sys persists its configuration
# (HKLM\SYSTEM\CurrentControlSet\Services\HTTP\Parameters: SslBindingInfo\<ip:port>,
# SslSniBindingInfo\<host:port>, SslCcsBindingInfo\<ip:port>; values SslCertHash, SslCertStoreName),
# never from netsh's localized text. Objects {Kind ('ipport'|'hostnameport'|'ccs'), Key (the
# endpoint key of Get-WinCertPrivateEndpointKey, 'ccs=<port>' for the central store), Address
# (IP, '[v6]', or the A-label host), Port, CertificateHash (upper hex or ''),
# CertificateStoreName}. Mirrors IisServer.ssl_mappings in simulator/windows/iis.py.
function Get-WinCertPrivateHttpSysMapping {
    param(
        [Microsoft.Win32.RegistryKey]$Root
    )
    $mappings = [System.Collections.Generic.List[object]]::new()
    $parameters = 'SYSTEM\CurrentControlSet\Services\HTTP\Parameters'
    foreach ($kind in @('ipport', 'hostnameport', 'ccs')) {
        $folder = switch ($kind) { 'ipport' { 'SslBindingInfo' } 'hostnameport' { 'SslSniBindingInfo' } 'ccs' { 'SslCcsBindingInfo' } }
        $key = $Root.OpenSubKey(('{0}\{1}' -f $parameters, $folder))
        if ($null -eq $key) { continue }
        try {
            foreach ($name in $key.GetSubKeyNames()) {
                $separator = $name.LastIndexOf(':')
                if ($separator -lt 1) { continue }
                $address = $name.Substring(0, $separator)
                $portText = $name.Substring($separator + 1)
                if ($portText -notmatch '^[0-9]+\z') { continue }
                $entry = $key.OpenSubKey($name)
                if ($null -eq $entry) { continue }
                try {
                    $hashBytes = $entry.GetValue('SslCertHash', $null)
                    $hash = if ($hashBytes -is [byte[]] -and $hashBytes.Length -gt 0) { [System.BitConverter]::ToString($hashBytes).Replace('-', '') } else { '' }
                    $storeName = [string]$entry.GetValue('SslCertStoreName', '')
                }
                finally { $entry.Close() }
                if ($kind -eq 'hostnameport') {
                    $forms = ConvertTo-WinCertPrivateIdnHost -HostName $address
                    $address = if ($null -ne $forms) { $forms[0] } else { $address.ToLowerInvariant() }
                    $endpointKey = 'hostnameport={0}:{1}' -f $address, [int]$portText
                }
                elseif ($kind -eq 'ccs') {
                    $endpointKey = 'ccs={0}' -f [int]$portText
                }
                else {
                    $endpointKey = Get-WinCertPrivateEndpointKey -Information ('{0}:{1}:' -f $address, $portText) -Flags 0
                    $address = $endpointKey.Substring(7, $endpointKey.LastIndexOf(':') - 7)
                }
                $mappings.Add([pscustomobject]@{
                        Kind                 = $kind
                        Key                  = $endpointKey
                        Address              = $address
                        Port                 = [int]$portText
                        CertificateHash      = $hash.ToUpperInvariant()
                        CertificateStoreName = $storeName
                    })
            }
        }
        finally { $key.Close() }
    }
    return , $mappings.ToArray()
}

# The http.sys mappings that take precedence over the new mapping $Key, or that it would take
# precedence over, for some clients. http.sys picks a certificate in this order: an IP-specific
# IP:port mapping, then the SNI host:port mapping, then the central certificate store (CCS) on
# the port, then the wildcard 0.0.0.0:port / [::]:port mapping (Microsoft's IIS 8.0 SNI article;
# the failure report of issue 12). So an IP-specific IP:port mapping shadows every SNI and CCS
# mapping on its port for clients connecting to that IP, and an SNI mapping is shadowed by every
# IP-specific mapping on its port. Objects {Mapping (the shadowing/shadowed mapping), Direction
# ('shadows'|'shadowed')}. Mirrors shadowing in simulator/windows/iis.py.
function Find-WinCertPrivateShadowedMapping {
    param(
        [string]$Key,
        [object[]]$Mappings
    )
    $found = [System.Collections.Generic.List[object]]::new()
    $kind, $value = $Key.Split([char[]]'=', 2)
    $port = [int]$value.Substring($value.LastIndexOf(':') + 1)
    $address = $value.Substring(0, $value.LastIndexOf(':'))
    $specific = $kind -eq 'ipport' -and $address -ne '0.0.0.0' -and $address -ne '[::]'
    foreach ($mapping in $Mappings) {
        if ($mapping.Key -eq $Key -or $mapping.Port -ne $port) { continue }
        $otherSpecific = $mapping.Kind -eq 'ipport' -and $mapping.Address -ne '0.0.0.0' -and $mapping.Address -ne '[::]'
        if ($specific -and ($mapping.Kind -eq 'hostnameport' -or $mapping.Kind -eq 'ccs')) {
            $found.Add([pscustomobject]@{ Mapping = $mapping; Direction = 'shadows' })
        }
        elseif ($kind -eq 'hostnameport' -and $otherSpecific) {
            $found.Add([pscustomobject]@{ Mapping = $mapping; Direction = 'shadowed' })
        }
    }
    return , $found.ToArray()
}

# The sslFlags attribute of an IIS binding (0 when it has none).
function Get-WinCertPrivateBindingSslFlags {
    param(
        [object]$Binding
    )
    try { return [int]$Binding.GetAttributeValue('sslFlags') } catch { return 0 }
}

# The certificate hash of an IIS binding as upper-case hex ('' when it has none).
function Get-WinCertPrivateBindingThumbprint {
    param(
        [object]$Binding
    )
    $bytes = $Binding.CertificateHash
    if ($null -eq $bytes -or $bytes.Length -eq 0) { return '' }
    return [System.BitConverter]::ToString($bytes).Replace('-', '').ToUpperInvariant()
}

# A service's StartName as an account name: LocalSystem -> NT AUTHORITY\SYSTEM,
# .\user -> COMPUTERNAME\user.
function ConvertTo-WinCertPrivateAccountName {
    param(
        [string]$StartName
    )
    $name = ([string]$StartName).Trim()
    if ($name -eq 'LocalSystem') { return 'NT AUTHORITY\SYSTEM' }
    if ($name.StartsWith('.\')) { return ('{0}\{1}' -f $env:COMPUTERNAME, $name.Substring(2)) }
    return $name
}

# The SQL Server instance $Name as registered {Name, Id} (64-bit registry view $Root), or $null.
function Find-WinCertPrivateSqlInstance {
    param(
        [Microsoft.Win32.RegistryKey]$Root,
        [string]$Name
    )
    $names = $Root.OpenSubKey('SOFTWARE\Microsoft\Microsoft SQL Server\Instance Names\SQL')
    if ($null -eq $names) { return $null }
    try {
        foreach ($valueName in $names.GetValueNames()) {
            if ($valueName -eq $Name) {
                return [pscustomobject]@{ Name = [string]$valueName; Id = [string]$names.GetValue($valueName) }
            }
        }
        return $null
    }
    finally { $names.Close() }
}

# The service of a SQL Server instance: MSSQLSERVER or MSSQL$<name>.
function Get-WinCertPrivateSqlServiceName {
    param(
        [string]$InstanceName
    )
    if ($InstanceName -eq 'MSSQLSERVER') { return 'MSSQLSERVER' }
    return ('MSSQL$' + $InstanceName)
}

# Stops a service (and its dependents) and starts it again, then the dependents that were
# running; returns $null or the reason it did not restart (never throws).
function Restart-WinCertPrivateSqlService {
    param(
        [string]$Name
    )
    try {
        $service = [System.ServiceProcess.ServiceController]::new($Name)
        $dependents = @($service.DependentServices | Where-Object { $_.Status -eq 'Running' })
        if ($service.Status -ne [System.ServiceProcess.ServiceControllerStatus]::Stopped) {
            if ($service.Status -ne [System.ServiceProcess.ServiceControllerStatus]::StopPending) { $service.Stop() }
            $service.WaitForStatus([System.ServiceProcess.ServiceControllerStatus]::Stopped, [TimeSpan]::FromSeconds(60))
        }
        $service.Start()
        $service.WaitForStatus([System.ServiceProcess.ServiceControllerStatus]::Running, [TimeSpan]::FromSeconds(90))
        foreach ($dependent in $dependents) {
            try { $dependent.Start() }
            catch { Write-Warning ("Dependent service '{0}' of '{1}' was not started again: {2}" -f $dependent.ServiceName, $Name, $_.Exception.Message) }
        }
        return $null
    }
    catch {
        $cause = Get-WinCertPrivateInnerException -Exception $_.Exception
        return ("Service '{0}' did not restart: {1}" -f $Name, $cause.Message)
    }
}
