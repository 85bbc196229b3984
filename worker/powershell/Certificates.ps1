# WinCert Orchestrator: host facts, certificate import and removal for LocalMachine stores.
# Target: Windows PowerShell 5.1 on .NET Framework 4.7+ (also runs on PowerShell 7).
# Loaded once per runspace after Common.ps1 (or pre-installed as a module for JEA endpoints).
# Public functions are defined at column 0; helpers shared with other functions are the private
# *-WinCertPrivate* functions of Common.ps1, the others are nested inside the function that uses
# them. The simulator implements the same functions in simulator/commands/certificates.py; both
# must produce the same objects, warnings and errors (tests/contract checks names, parameters
# and error ids). No parameter value is ever placed into script text: values are used as .NET
# arguments, -LiteralPath paths, or elements of an external tool's argument list.

function Get-WinCertHostInfo {
    <#
    .SYNOPSIS
    Facts about this host as one compact JSON string.

    .DESCRIPTION
    {"ComputerName", "OsBuild", "IisVersion" ("10.0" or null when IIS is not installed),
    "Providers": [{"Name", "Kind": "CSP" | "KSP"}]}. CSPs are the subkeys of
    HKLM:\SOFTWARE\Microsoft\Cryptography\Defaults\Provider; KSPs are the CNG providers under
    HKLM:\SYSTEM\CurrentControlSet\Control\Cryptography\Providers that register the key storage
    interface (UM\00010001). Never parsed from localized tool output. Order: CSPs, then KSPs,
    each sorted by name (ordinal, case-insensitive).
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param()

    $ErrorActionPreference = 'Stop'

    function Get-SortedName {
        param(
            [string[]]$Name
        )
        $names = [string[]]@($Name | Where-Object { -not [string]::IsNullOrEmpty($_) })
        [System.Array]::Sort($names, [System.StringComparer]::OrdinalIgnoreCase)
        return , $names
    }

    $currentVersion = Get-ItemProperty -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion' -Name 'CurrentBuildNumber'
    $osBuild = [int]$currentVersion.CurrentBuildNumber

    $iisVersion = $null
    $inetStpPath = 'HKLM:\SOFTWARE\Microsoft\InetStp'
    if (Test-Path -LiteralPath $inetStpPath) {
        $inetStp = Get-ItemProperty -LiteralPath $inetStpPath
        if ($null -ne $inetStp.PSObject.Properties['MajorVersion']) {
            $minor = 0
            if ($null -ne $inetStp.PSObject.Properties['MinorVersion']) { $minor = [int]$inetStp.MinorVersion }
            $iisVersion = '{0}.{1}' -f [int]$inetStp.MajorVersion, $minor
        }
    }

    $providers = [System.Collections.Generic.List[object]]::new()
    $cspRoot = 'HKLM:\SOFTWARE\Microsoft\Cryptography\Defaults\Provider'
    if (Test-Path -LiteralPath $cspRoot) {
        $cspNames = @(Get-ChildItem -LiteralPath $cspRoot | ForEach-Object { $_.PSChildName })
        foreach ($name in (Get-SortedName -Name $cspNames)) {
            $providers.Add([pscustomobject]@{ Name = $name; Kind = 'CSP' })
        }
    }
    $cngRoot = 'HKLM:\SYSTEM\CurrentControlSet\Control\Cryptography\Providers'
    if (Test-Path -LiteralPath $cngRoot) {
        $kspNames = @(Get-ChildItem -LiteralPath $cngRoot |
                Where-Object { Test-Path -LiteralPath (Join-Path -Path $_.PSPath -ChildPath 'UM\00010001') } |
                ForEach-Object { $_.PSChildName })
        foreach ($name in (Get-SortedName -Name $kspNames)) {
            $providers.Add([pscustomobject]@{ Name = $name; Kind = 'KSP' })
        }
    }

    [pscustomobject]@{
        ComputerName = [string]$env:COMPUTERNAME
        OsBuild      = $osBuild
        IisVersion   = $iisVersion
        Providers    = [object[]]$providers.ToArray()
    } | ConvertTo-Json -Compress -Depth 4
}

function Import-WinCertCertificate {
    <#
    .SYNOPSIS
    Imports one certificate (and its private key, if the data carries one) into
    LocalMachine\<StorePath>; one compact JSON string {"Thumbprint", "Outcome", "HasPrivateKey"}.

    .DESCRIPTION
    CertificateData is a PKCS#12 (PFX) blob or one certificate (DER, or PEM/base64 text).
    Password omitted = the null password; an empty SecureString = the empty password (Windows
    opens files protected with either using either). Only the certificate whose thumbprint is
    ExpectedThumbprint (whitespace and U+200E/U+200F removed, upper-cased) is added; chain
    certificates are imported by separate calls. A key-bearing certificate must be the first
    key-bearing certificate of the PKCS#12.

    Keys go to the machine key store and persist (MachineKeySet | PersistKeySet, plus Exportable
    only with -Exportable). With -ProviderName (a registered CSP or KSP, matched trimmed and
    case-insensitively) the key is placed by certutil -importPFX -csp into that provider; certutil
    never sees the caller's password (the key is handed over re-exported under a random one-time
    password).

    Outcome: added | replaced | already_present (the thumbprint was there with a key, or the
    input has no key, and -Overwrite was not given: nothing changes). After the change the store
    is re-read: the certificate must be listed and, when a key was imported, HasPrivateKey must
    be true and the key must sign data its public key verifies; otherwise the change is undone.

    Errors (FullyQualifiedErrorId): WinCert.StoreNotFound, WinCert.StoreOpenFailed,
    WinCert.ProviderNotFound, WinCert.PfxImportFailed (unreadable data: wrong password, or an
    algorithm / iteration count this Windows build does not read; the thumbprint is not in the
    data; the provider cannot hold the key), WinCert.ImportVerificationFailed (rolled back).
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [string]$StorePath,

        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [byte[]]$CertificateData,

        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [string]$ExpectedThumbprint,

        [securestring]$Password,

        [string]$ProviderName,

        [switch]$Exportable,

        [switch]$Overwrite
    )

    $ErrorActionPreference = 'Stop'

    function Get-StoreThumbprint {
        param(
            [System.Security.Cryptography.X509Certificates.X509Store]$Store
        )
        $set = [System.Collections.Generic.HashSet[string]]::new([System.StringComparer]::OrdinalIgnoreCase)
        foreach ($certificate in $Store.Certificates) { [void]$set.Add($certificate.Thumbprint) }
        return , $set
    }

    $x509 = 'System.Security.Cryptography.X509Certificates'
    $expected = ($ExpectedThumbprint -replace '[\s\u200E\u200F]', '').ToUpperInvariant()
    $keyFlags = [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]'MachineKeySet, PersistKeySet'
    if ($Exportable) { $keyFlags = $keyFlags -bor [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]::Exportable }
    $probeFlags = [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]::MachineKeySet
    # $null must reach X509Certificate2 as a null string, not "" ([string]$null is "").
    $nullPassword = [System.Management.Automation.Language.NullString]::Value

    $store = Open-WinCertPrivateTargetStore -StorePath $StorePath -Flags 'ReadWrite, OpenExistingOnly' -Cmdlet $PSCmdlet

    $probe = $null
    $collection = $null
    $selected = $null
    $imported = $null
    try {
        # 1. The provider, if one is asked for (blank = none).
        $provider = $null
        if (-not [string]::IsNullOrWhiteSpace($ProviderName)) {
            $provider = Resolve-WinCertPrivateCryptoProvider -Name $ProviderName -Cmdlet $PSCmdlet
        }

        # 2. Read the data; find the expected certificate without persisting any key yet
        #    (MachineKeySet without PersistKeySet: the temporary container goes with Reset()).
        $readError = $null
        $isPkcs12 = $false
        $hasKey = $false
        $contained = @()
        try {
            $contentType = [System.Security.Cryptography.X509Certificates.X509Certificate2]::GetCertContentType($CertificateData)
            if ($contentType -eq [System.Security.Cryptography.X509Certificates.X509ContentType]::Pfx) {
                $isPkcs12 = $true
                if ($null -eq $Password) {
                    $probe = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($CertificateData, $nullPassword, $probeFlags)
                }
                else {
                    $probe = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($CertificateData, $Password, $probeFlags)
                }
                if ($probe.Thumbprint -eq $expected) {
                    $selected = $probe
                    $hasKey = [bool]$probe.HasPrivateKey
                }
                else {
                    # The expected certificate is another one of the file (a chain certificate).
                    # X509Certificate2Collection.Import takes the password only as a string: the
                    # BSTR is zeroed at once; the managed copy lives until collected (unavoidable).
                    $plain = $nullPassword
                    if ($null -ne $Password) {
                        $bstr = [System.Runtime.InteropServices.Marshal]::SecureStringToBSTR($Password)
                        try { $plain = [System.Runtime.InteropServices.Marshal]::PtrToStringBSTR($bstr) }
                        finally { [System.Runtime.InteropServices.Marshal]::ZeroFreeBSTR($bstr) }
                    }
                    $collection = [System.Security.Cryptography.X509Certificates.X509Certificate2Collection]::new()
                    $collection.Import($CertificateData, $plain, $probeFlags)
                    $plain = $null
                    $contained = @($collection | ForEach-Object { $_.Thumbprint })
                    foreach ($member in $collection) {
                        if ($member.Thumbprint -eq $expected) { $selected = $member }
                    }
                    if ($null -ne $selected -and $selected.HasPrivateKey) {
                        $readError = "The certificate {0} carries a private key but is not the first key-bearing certificate of the PKCS#12 data; import it from a PKCS#12 file of its own." -f $selected.Thumbprint
                    }
                    elseif ($null -ne $selected) {
                        $selected = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($selected.RawData)
                    }
                }
            }
            elseif ($contentType -eq [System.Security.Cryptography.X509Certificates.X509ContentType]::Cert) {
                $probe = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($CertificateData)
                if ($probe.Thumbprint -eq $expected) { $selected = $probe } else { $contained = @($probe.Thumbprint) }
            }
            else {
                $readError = 'The certificate data could not be imported: Cannot find the requested object.'
            }
        }
        catch {
            $readError = 'The certificate data could not be imported: {0}' -f (Get-WinCertPrivateInnerException -Exception $_.Exception).Message
        }
        if ($null -eq $readError -and $null -eq $selected) {
            if ($null -ne $probe -and $contained.Count -eq 0) { $contained = @($probe.Thumbprint) }
            $readError = "The certificate data does not contain the certificate '{0}' (it contains {1})." -f $expected, ($contained -join ', ')
        }
        if ($null -ne $readError) {
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $readError -ErrorId 'WinCert.PfxImportFailed' `
                        -Category InvalidData -Target $expected `
                        -Exception ([System.Security.Cryptography.CryptographicException]::new($readError))))
        }
        $thumbprint = $selected.Thumbprint

        # 3. Can the provider hold the key? (CryptoAPI CSPs have no elliptic curves; the CSP's
        #    registered Type says RSA or DSS. KSP limits - TPM, smart card - are certutil's.)
        if ($hasKey -and $null -ne $provider -and $provider.Kind -eq 'CSP') {
            $algorithm = Get-WinCertPrivateKeyAlgorithm -Certificate $selected
            $holds = 'RSA'
            if ($provider.Type -in 3, 13, 18) { $holds = 'DSA' }
            if ($algorithm -ne $holds) {
                $message = "The certificate data could not be imported into provider '{0}': This CryptoAPI provider holds {1} keys only; the certificate's key is {2}." -f $provider.Name, $holds, $algorithm
                $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.PfxImportFailed' `
                            -Category InvalidData -Target $expected `
                            -Exception ([System.Security.Cryptography.CryptographicException]::new($message))))
            }
        }

        # 4. Already there?
        $previous = $null
        foreach ($certificate in $store.Certificates) {
            if ($certificate.Thumbprint -eq $thumbprint) { $previous = $certificate }
        }
        if ($null -ne $previous -and ($previous.HasPrivateKey -or -not $hasKey) -and -not $Overwrite) {
            return ([pscustomobject]@{
                    Thumbprint    = $thumbprint
                    Outcome       = 'already_present'
                    HasPrivateKey = [bool]$previous.HasPrivateKey
                } | ConvertTo-Json -Compress)
        }
        $outcome = if ($null -ne $previous) { 'replaced' } else { 'added' }

        # 5. Import.
        if (-not $hasKey) {
            $store.Add($selected)
        }
        elseif ($null -eq $provider) {
            if ($null -eq $Password) {
                $imported = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($CertificateData, $nullPassword, $keyFlags)
            }
            else {
                $imported = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($CertificateData, $Password, $keyFlags)
            }
            $store.Add($imported)
        }
        else {
            # certutil -importPFX places the key into the named provider. certutil takes a PKCS#12
            # password only on its command line (-p), where this host's process list and
            # process-creation audit events (4688, with command-line auditing) show it, so the
            # caller's password never reaches certutil: the data is read once more into a
            # temporary key that is exportable but not persisted (MachineKeySet | Exportable
            # without PersistKeySet, like the probe of step 2: the container goes with Reset() in
            # finally) and exported again, this certificate and its key only, under a random
            # one-time password (32 bytes from RNGCryptoServiceProvider as 64 hex digits, so that
            # certutil cannot take it for an option). Only that password is on certutil's command
            # line; it opens nothing but the re-exported file, which is written to a uniquely
            # named file in the caller's %TEMP% (no GetTempFileName leftovers) and deleted in
            # finally. EphemeralKeySet (.NET 4.7.2+) is not used: a PKCS#12 export of an
            # ephemeral key is not dependable on .NET Framework.
            $before = Get-StoreThumbprint -Store $store
            $result = $null
            $runError = $null
            $prepareError = $null
            $pfxFile = Join-Path -Path ([System.IO.Path]::GetTempPath()) -ChildPath ('wincert-{0}.pfx' -f [guid]::NewGuid().ToString('N'))
            $transfer = $null
            $transferData = $null
            $oneTimePassword = $null
            $certutilArgs = $null
            try {
                try {
                    $transferFlags = [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]'MachineKeySet, Exportable'
                    if ($null -eq $Password) {
                        $transfer = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($CertificateData, $nullPassword, $transferFlags)
                    }
                    else {
                        $transfer = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($CertificateData, $Password, $transferFlags)
                    }
                    if ($transfer.Thumbprint -ne $thumbprint) {
                        throw ('the data read again holds {0} first, not {1}' -f $transfer.Thumbprint, $thumbprint)
                    }
                    $random = [byte[]]::new(32)
                    $generator = [System.Security.Cryptography.RNGCryptoServiceProvider]::new()
                    try { $generator.GetBytes($random) } finally { $generator.Dispose() }
                    $oneTimePassword = [System.BitConverter]::ToString($random).Replace('-', '')
                    [System.Array]::Clear($random, 0, $random.Length)
                    $transferData = $transfer.Export([System.Security.Cryptography.X509Certificates.X509ContentType]::Pfx, $oneTimePassword)
                    $stream = [System.IO.FileStream]::new($pfxFile, [System.IO.FileMode]::CreateNew, [System.IO.FileAccess]::Write, [System.IO.FileShare]::None)
                    try { $stream.Write($transferData, 0, $transferData.Length) } finally { $stream.Dispose() }
                }
                catch {
                    $prepareError = (Get-WinCertPrivateInnerException -Exception $_.Exception).Message
                }
                if ($null -eq $prepareError) {
                    $modifiers = 'NoChain'
                    if (-not $Exportable) { $modifiers = 'NoChain,NoExport' }
                    $certutilArgs = [string[]]@('-f', '-p', $oneTimePassword, '-csp', $provider.Name, '-importPFX', $StorePath, $pfxFile, $modifiers)
                    $certutil = Join-Path -Path $env:SystemRoot -ChildPath 'System32\certutil.exe'
                    try {
                        $result = Invoke-WinCertPrivateNativeCommand -FilePath $certutil -ArgumentList $certutilArgs
                    }
                    catch {
                        $runError = (Get-WinCertPrivateInnerException -Exception $_.Exception).Message
                    }
                }
            }
            finally {
                $oneTimePassword = $null
                $certutilArgs = $null
                if ($null -ne $transferData) { [System.Array]::Clear($transferData, 0, $transferData.Length) }
                if ($null -ne $transfer) { $transfer.Reset() }
                if (Test-Path -LiteralPath $pfxFile) { Remove-Item -LiteralPath $pfxFile -Force }
            }
            # Anything else certutil added (a second key-bearing certificate) is removed again.
            $store.Close()
            $store.Open([System.Security.Cryptography.X509Certificates.OpenFlags]'ReadWrite, OpenExistingOnly')
            foreach ($certificate in @($store.Certificates)) {
                if (-not $before.Contains($certificate.Thumbprint) -and $certificate.Thumbprint -ne $thumbprint) {
                    if ($certificate.HasPrivateKey) { Remove-WinCertPrivateCertificateKey -Certificate $certificate }
                    $store.Remove($certificate)
                }
            }
            if ($null -ne $prepareError -or $null -ne $runError -or $result.ExitCode -ne 0) {
                if ($null -ne $prepareError) {
                    $message = "The certificate data could not be imported into provider '{0}': its key could not be prepared for certutil: {1}" -f $provider.Name, $prepareError
                }
                elseif ($null -ne $runError) {
                    $message = "The certificate data could not be imported into provider '{0}': certutil could not run: {1}" -f $provider.Name, $runError
                }
                else {
                    $lines = @($result.Output -split "`r?`n" | Where-Object { $_.Trim() })
                    $detail = if ($lines.Count -gt 0) { $lines[-1].Trim() } else { '' }
                    $message = "The certificate data could not be imported into provider '{0}': certutil exit code 0x{1:X8}: {2}" -f $provider.Name, $result.ExitCode, $detail
                }
                $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.PfxImportFailed' `
                            -Category InvalidData -Target $expected `
                            -Exception ([System.Security.Cryptography.CryptographicException]::new($message))))
            }
        }

        # 6. Verify with a fresh read of the store; undo on failure.
        $problem = $null
        $stored = Find-WinCertPrivateStoredCertificate -StorePath $StorePath -Thumbprint $thumbprint
        if ($null -eq $stored) {
            $problem = 'the store does not list it afterwards'
        }
        elseif ($hasKey -and -not $stored.HasPrivateKey) {
            $problem = 'the store shows it without a private key'
        }
        elseif ($hasKey -and -not (Test-WinCertPrivateKeyUsable -Certificate $stored)) {
            $problem = 'its private key cannot be used'
        }
        if ($null -ne $problem) {
            $rollbackNote = ''
            try {
                foreach ($certificate in @($store.Certificates)) {
                    if ($certificate.Thumbprint -eq $thumbprint) {
                        if ($hasKey -and $certificate.HasPrivateKey) { Remove-WinCertPrivateCertificateKey -Certificate $certificate }
                        $store.Remove($certificate)
                    }
                }
                if ($null -ne $previous) { $store.Add($previous) }
            }
            catch {
                $rollbackNote = ' Rolling back failed: {0}' -f (Get-WinCertPrivateInnerException -Exception $_.Exception).Message
            }
            $message = 'Certificate {0} was imported into LocalMachine\{1} but {2}; the import was rolled back.{3}' -f $thumbprint, $StorePath, $problem, $rollbackNote
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.ImportVerificationFailed' `
                        -Category InvalidResult -Target $thumbprint))
        }

        [pscustomobject]@{
            Thumbprint    = $thumbprint
            Outcome       = $outcome
            HasPrivateKey = [bool]$stored.HasPrivateKey
        } | ConvertTo-Json -Compress
    }
    finally {
        foreach ($held in @($probe, $imported)) { if ($null -ne $held) { $held.Reset() } }
        if ($null -ne $collection) { foreach ($member in $collection) { $member.Reset() } }
        $store.Close()
    }
}

function Remove-WinCertCertificate {
    <#
    .SYNOPSIS
    Removes one certificate from LocalMachine\<StorePath>; one compact JSON string
    {"Thumbprint", "Outcome": "removed" | "already_absent" | "in_use", "UsedBy": [str]}.

    .DESCRIPTION
    Thumbprint: whitespace and U+200E/U+200F are removed and the rest upper-cased; it is
    compared exactly (never a wildcard or a path). Idempotent: a certificate that is not there
    is already_absent. With -IfUnused a certificate that an IIS https binding (any site) or a
    SQL Server instance uses is kept (in_use; UsedBy: "IIS site '<name>' binding <ip:port:host>",
    "SQL Server instance <name>").

    Removing a certificate that has a private key also deletes the key container (CNG key or
    CryptoAPI container, found through the certificate) unless another certificate in any
    LocalMachine store refers to the same container by container name or unique name, whatever
    its public key (tools that reuse PFX friendly names as container names give certificates
    with different keys one container name). A key that cannot be opened or deleted leaves a
    warning ("... its private key could not be deleted: <reason>"); the certificate stays
    removed.

    Errors: WinCert.StoreNotFound, WinCert.StoreOpenFailed, WinCert.UsageCheckFailed (-IfUnused
    and IIS or SQL Server configuration could not be read: nothing is removed).
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [string]$StorePath,

        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [string]$Thumbprint,

        [switch]$IfUnused
    )

    $ErrorActionPreference = 'Stop'

    # Who uses the thumbprint: IIS https bindings of every site, then SQL Server instances.
    function Get-CertificateUsage {
        param(
            [string]$Thumbprint
        )
        $usedBy = [System.Collections.Generic.List[string]]::new()
        $iisAssembly = Join-Path -Path $env:windir -ChildPath 'System32\inetsrv\Microsoft.Web.Administration.dll'
        if ((Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\InetStp') -and (Test-Path -LiteralPath $iisAssembly)) {
            Add-Type -LiteralPath $iisAssembly
            $manager = [Microsoft.Web.Administration.ServerManager]::new()
            try {
                foreach ($site in $manager.Sites) {
                    foreach ($binding in $site.Bindings) {
                        if ($binding.Protocol -ne 'https' -or $null -eq $binding.CertificateHash) { continue }
                        $hash = [System.BitConverter]::ToString([byte[]]$binding.CertificateHash).Replace('-', '')
                        if ($hash -eq $Thumbprint) {
                            $usedBy.Add(("IIS site '{0}' binding {1}" -f $site.Name, $binding.BindingInformation))
                        }
                    }
                }
            }
            finally {
                $manager.Dispose()
            }
        }
        $instanceNames = 'HKLM:\SOFTWARE\Microsoft\Microsoft SQL Server\Instance Names\SQL'
        if (Test-Path -LiteralPath $instanceNames) {
            $names = Get-Item -LiteralPath $instanceNames
            foreach ($instance in $names.GetValueNames()) {
                $instanceId = [string]$names.GetValue($instance)
                $instanceKey = Join-Path -Path 'HKLM:\SOFTWARE\Microsoft\Microsoft SQL Server' -ChildPath $instanceId
                $netLib = Join-Path -Path $instanceKey -ChildPath 'MSSQLServer\SuperSocketNetLib'
                if (-not (Test-Path -LiteralPath $netLib)) { continue }
                $value = (Get-Item -LiteralPath $netLib).GetValue('Certificate')
                if ($null -ne $value -and ([string]$value).Trim() -ieq $Thumbprint) {
                    $usedBy.Add(('SQL Server instance {0}' -f $instance))
                }
            }
        }
        return , $usedBy.ToArray()
    }

    # The key container's names: @(container name, unique name) - CNG KeyName / UniqueName or
    # CryptoAPI KeyContainerName / UniqueKeyContainerName; $null when neither can be read.
    function Get-KeyContainerName {
        param(
            [System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate
        )
        $key = Get-WinCertPrivateCertificateKey -Certificate $Certificate
        if ($null -eq $key) { return $null }
        try {
            if ($key -is [System.Security.Cryptography.RSACng] -or $key -is [System.Security.Cryptography.ECDsaCng] -or
                $key -is [System.Security.Cryptography.DSACng]) {
                return , @([string]$key.Key.KeyName, [string]$key.Key.UniqueName)
            }
            if ($key -is [System.Security.Cryptography.ICspAsymmetricAlgorithm]) {
                $info = $key.CspKeyContainerInfo
                return , @([string]$info.KeyContainerName, [string]$info.UniqueKeyContainerName)
            }
            return $null
        }
        finally {
            $key.Dispose()
        }
    }

    # Whether a certificate other than (StorePath, Thumbprint) in any LocalMachine store refers to
    # the key container $Names (container name or unique name, case-insensitive), whatever its
    # public key: two certificates with different keys may name one container.
    function Test-KeyReferenced {
        param(
            [string[]]$Names,
            [string]$StorePath,
            [string]$Thumbprint
        )
        $wanted = @($Names | Where-Object { $_ })
        foreach ($storeName in @(Get-ChildItem -LiteralPath 'Cert:\LocalMachine' | ForEach-Object { $_.Name })) {
            $other = [System.Security.Cryptography.X509Certificates.X509Store]::new(
                $storeName, [System.Security.Cryptography.X509Certificates.StoreLocation]::LocalMachine)
            try {
                $other.Open([System.Security.Cryptography.X509Certificates.OpenFlags]'ReadOnly, OpenExistingOnly')
                foreach ($certificate in $other.Certificates) {
                    if (-not $certificate.HasPrivateKey) { continue }
                    if ($storeName -ieq $StorePath -and $certificate.Thumbprint -eq $Thumbprint) { continue }
                    try {
                        $names = Get-KeyContainerName -Certificate $certificate
                    }
                    catch {
                        return $true  # cannot tell: keep the key
                    }
                    foreach ($name in @($names)) {
                        if ($name -and $wanted -contains $name) { return $true }
                    }
                }
            }
            finally {
                $other.Close()
            }
        }
        return $false
    }

    $normalized = ($Thumbprint -replace '[\s\u200E\u200F]', '').ToUpperInvariant()

    $store = Open-WinCertPrivateTargetStore -StorePath $StorePath -Flags 'ReadWrite, OpenExistingOnly' -Cmdlet $PSCmdlet

    try {
        $target = $null
        foreach ($certificate in $store.Certificates) {
            if ($certificate.Thumbprint -eq $normalized) { $target = $certificate }
        }
        if ($null -eq $target) {
            return ([pscustomobject]@{ Thumbprint = $normalized; Outcome = 'already_absent'; UsedBy = [object[]]@() } |
                    ConvertTo-Json -Compress)
        }

        if ($IfUnused) {
            $usage = $null
            $usageError = $null
            try {
                $usage = Get-CertificateUsage -Thumbprint $normalized
            }
            catch {
                $usageError = $_.Exception.Message
            }
            if ($null -ne $usageError) {
                $message = 'Could not check whether certificate {0} is in use (IIS / SQL Server configuration): {1}' -f $normalized, $usageError
                $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.UsageCheckFailed' `
                            -Category ReadError -Target $normalized))
            }
            if ($usage.Count -gt 0) {
                return ([pscustomobject]@{ Thumbprint = $normalized; Outcome = 'in_use'; UsedBy = [object[]]$usage } |
                        ConvertTo-Json -Compress)
            }
        }

        $containerNames = $null
        if ($target.HasPrivateKey) {
            try {
                $containerNames = Get-KeyContainerName -Certificate $target
            }
            catch {
                Write-Warning ('Certificate {0}: its private key could not be opened ({1}); the key container is left in place.' -f $normalized, $_.Exception.Message)
            }
        }
        $store.Remove($target)
        if ($null -ne $containerNames -and @($containerNames | Where-Object { $_ }).Count -gt 0) {
            try {
                if (-not (Test-KeyReferenced -Names $containerNames -StorePath $StorePath -Thumbprint $normalized)) {
                    Remove-WinCertPrivateCertificateKey -Certificate $target
                }
            }
            catch {
                Write-Warning ('Certificate {0} was removed but its private key could not be deleted: {1}' -f $normalized, $_.Exception.Message)
            }
        }

        [pscustomobject]@{ Thumbprint = $normalized; Outcome = 'removed'; UsedBy = [object[]]@() } | ConvertTo-Json -Compress
    }
    finally {
        $store.Close()
    }
}
