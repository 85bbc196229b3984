# WinCert Orchestrator: reenrollment with on-device key generation (certreq -new / -accept).
# Target: Windows PowerShell 5.1 on .NET Framework 4.7+ (also runs on PowerShell 7).
# Public functions are defined at column 0; helpers shared with other functions are the private
# *-WinCertPrivate* functions of Common.ps1 (loaded first), the others are nested inside the
# function that uses them. The simulator implements the same functions in
# simulator/commands/enrollment.py (same objects, error ids and messages; tests/contract checks
# names, parameters and error ids). No parameter value is ever placed into script text: values
# go into the request file escaped for it (quotes and percent signs doubled, as INF string values
# need; the subject alternative names as a DER extension in base64), and certreq.exe gets an
# argument array.

function New-WinCertCertificateRequest {
    <#
    .SYNOPSIS
    Generates a key pair in the machine key store and returns a PKCS#10 request; one compact JSON
    string {"RequestId", "Csr" (PEM), "Outcome": "created" | "existing"}.

    .DESCRIPTION
    As certreq -new -machine: the key is made by -ProviderName (MachineKeySet, non-exportable
    unless -Exportable) and stays pending in LocalMachine\REQUEST, its dummy certificate tagged
    with the friendly name "WinCert request <RequestId>". The request (PEM) is kept in
    %ProgramData%\WinCertOrchestrator\requests\<RequestId>.csr, so a second call with the same
    RequestId returns the same request ("existing") and makes no second key. A tagged key
    without its saved request (or a saved request without its key) is stale: it is removed and a
    new request made.

    Subject is the canonical Windows form (CN=web01, O="Contoso, Inc"); the request file line
    doubles its quotes and its percent signs (INF files read %key% as a string substitution;
    %% is a literal %), as for every string value the request file carries. KeyAlgorithm RSA
    (KeyLength 2048 default, 3072, 4096), ECDSA_P256 or ECDSA_P384 (KeyLength omitted or the
    curve size). Subject alternative names (-DnsName,
    -IpAddress, -Email, -Upn, -Uri, in that order) are encoded here as the DER value of the
    extension and written to the request file in base64, so no value can break the file's
    syntax (certreq's "{text}" form splits on '&' and needs its own keywords, e.g. url=).

    Errors: WinCert.ProviderNotFound, WinCert.KeyGenerationFailed (a value the request file
    cannot carry, a key size that does not fit, a CryptoAPI provider asked for an ECDSA key, or
    certreq's own text).
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory)]
        [ValidatePattern('^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\z')]
        [string]$RequestId,

        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [string]$Subject,

        [Parameter(Mandatory)]
        [ValidateSet('RSA', 'ECDSA_P256', 'ECDSA_P384')]
        [string]$KeyAlgorithm,

        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [string]$ProviderName,

        [int]$KeyLength,

        [string[]]$DnsName,

        [string[]]$IpAddress,

        [string[]]$Email,

        [string[]]$Upn,

        [string[]]$Uri,

        [switch]$Exportable
    )

    $ErrorActionPreference = 'Stop'

    function Stop-KeyGeneration {
        param(
            [string]$Message
        )
        $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $Message -ErrorId 'WinCert.KeyGenerationFailed' `
                    -Category InvalidOperation -Target $RequestId))
    }

    # A DER element: tag byte, definite length, content.
    function New-DerElement {
        param(
            [int]$Tag,
            [byte[]]$Content
        )
        if ($null -eq $Content) { $Content = [byte[]]@() }
        $bytes = [System.Collections.Generic.List[byte]]::new()
        $bytes.Add([byte]$Tag)
        $length = $Content.Length
        if ($length -lt 0x80) {
            $bytes.Add([byte]$length)
        }
        else {
            $lengthBytes = [System.Collections.Generic.List[byte]]::new()
            while ($length -gt 0) {
                $lengthBytes.Insert(0, [byte]($length -band 0xFF))
                $length = $length -shr 8
            }
            $bytes.Add([byte](0x80 -bor $lengthBytes.Count))
            $bytes.AddRange($lengthBytes)
        }
        $bytes.AddRange($Content)
        return , $bytes.ToArray()
    }

    # An IA5String value (printable ASCII), or a KeyGenerationFailed error naming the SAN.
    function ConvertTo-Ia5Byte {
        param(
            [string]$Kind,
            [AllowEmptyString()]
            [string]$Value
        )
        if ([string]::IsNullOrEmpty($Value) -or $Value -notmatch '^[\x20-\x7E]+\z') {
            Stop-KeyGeneration -Message ("Subject alternative name {0} '{1}' is empty or not printable ASCII (an IA5String); give DNS names as A-labels (punycode)." -f $Kind, $Value)
        }
        return , [System.Text.Encoding]::ASCII.GetBytes($Value)
    }

    # The DER GeneralNames of the subject alternative names (RFC 5280), or $null when none.
    function ConvertTo-SanExtension {
        $names = [System.Collections.Generic.List[byte]]::new()
        foreach ($value in @($DnsName | Where-Object { $null -ne $_ })) {
            $names.AddRange([byte[]](New-DerElement -Tag 0x82 -Content (ConvertTo-Ia5Byte -Kind 'dns' -Value $value)))
        }
        foreach ($value in @($IpAddress | Where-Object { $null -ne $_ })) {
            $parsed = $null
            if (-not [System.Net.IPAddress]::TryParse($value.Trim().Trim('[', ']'), [ref]$parsed)) {
                Stop-KeyGeneration -Message ("Subject alternative name ip '{0}' is not an IP address." -f $value)
            }
            $names.AddRange([byte[]](New-DerElement -Tag 0x87 -Content $parsed.GetAddressBytes()))
        }
        foreach ($value in @($Email | Where-Object { $null -ne $_ })) {
            $names.AddRange([byte[]](New-DerElement -Tag 0x81 -Content (ConvertTo-Ia5Byte -Kind 'email' -Value $value)))
        }
        foreach ($value in @($Upn | Where-Object { $null -ne $_ })) {
            if ([string]::IsNullOrEmpty($value) -or $value -match '[\x00-\x1F]') {
                Stop-KeyGeneration -Message ("Subject alternative name upn '{0}' is empty or has control characters." -f $value)
            }
            # otherName { type-id 1.3.6.1.4.1.311.20.2.3, [0] EXPLICIT UTF8String }
            $oid = [byte[]]@(0x06, 0x0A, 0x2B, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x14, 0x02, 0x03)
            $utf8 = New-DerElement -Tag 0x0C -Content ([System.Text.Encoding]::UTF8.GetBytes($value))
            $explicit = New-DerElement -Tag 0xA0 -Content $utf8
            $names.AddRange([byte[]](New-DerElement -Tag 0xA0 -Content ([byte[]]($oid + $explicit))))
        }
        foreach ($value in @($Uri | Where-Object { $null -ne $_ })) {
            $names.AddRange([byte[]](New-DerElement -Tag 0x86 -Content (ConvertTo-Ia5Byte -Kind 'uri' -Value $value)))
        }
        if ($names.Count -eq 0) { return $null }
        return , (New-DerElement -Tag 0x30 -Content $names.ToArray())
    }

    # Offset of the content and the end of the DER element at $Offset.
    function Read-DerHeader {
        param(
            [byte[]]$Data,
            [int]$Offset
        )
        $length = [int]$Data[$Offset + 1]
        $start = $Offset + 2
        if ($length -ge 0x80) {
            $count = $length -band 0x7F
            $length = 0
            for ($i = 0; $i -lt $count; $i++) { $length = ($length -shl 8) -bor $Data[$start + $i] }
            $start += $count
        }
        return [pscustomobject]@{ Start = $start; End = $start + $length }
    }

    # A string value of the request file: in double quotes, inner quotes doubled, and percent
    # signs doubled (an INF file substitutes %key% from its [Strings] section; %% is one %).
    function ConvertTo-InfString {
        param(
            [string]$Value
        )
        return '"{0}"' -f $Value.Replace('"', '""').Replace('%', '%%')
    }

    # The subjectPublicKey bits of a PKCS#10 request (DER), as base64; $null if unreadable.
    function Get-RequestPublicKey {
        param(
            [byte[]]$Der
        )
        try {
            $request = Read-DerHeader -Data $Der -Offset 0
            $info = Read-DerHeader -Data $Der -Offset $request.Start
            $version = Read-DerHeader -Data $Der -Offset $info.Start
            $name = Read-DerHeader -Data $Der -Offset $version.End
            $spki = Read-DerHeader -Data $Der -Offset $name.End
            $algorithm = Read-DerHeader -Data $Der -Offset $spki.Start
            $bits = Read-DerHeader -Data $Der -Offset $algorithm.End
            $key = [byte[]]$Der[($bits.Start + 1)..($bits.End - 1)]
            return [System.Convert]::ToBase64String($key)
        }
        catch {
            return $null
        }
    }

    # The saved request of $RequestId as DER, or $null.
    function Read-SavedRequest {
        param(
            [string]$Path
        )
        if (-not (Test-Path -LiteralPath $Path -PathType Leaf)) { return $null }
        $text = [System.IO.File]::ReadAllText($Path)
        $body = ($text -replace '-----[^-]+-----', '') -replace '\s', ''
        try { return , [System.Convert]::FromBase64String($body) } catch { return $null }
    }

    # Dummy certificates in LocalMachine\REQUEST tagged with this request id.
    function Get-PendingCertificate {
        $pendingStore = Open-WinCertPrivateStore -Name 'REQUEST' -Flags ([System.Security.Cryptography.X509Certificates.OpenFlags]::ReadOnly)
        try {
            return , @($pendingStore.Certificates | Where-Object { $_.HasPrivateKey -and $_.FriendlyName -ceq $tag })
        }
        finally {
            $pendingStore.Close()
        }
    }

    function Remove-PendingCertificate {
        param(
            [System.Security.Cryptography.X509Certificates.X509Certificate2[]]$Certificate
        )
        $pendingStore = Open-WinCertPrivateStore -Name 'REQUEST' -Flags ([System.Security.Cryptography.X509Certificates.OpenFlags]::ReadWrite)
        try {
            foreach ($stale in $Certificate) {
                # Its pending key (CNG key or CryptoAPI container) first.
                try { Remove-WinCertPrivateCertificateKey -Certificate $stale }
                catch { Write-Warning ('The stale pending key of request {0} could not be deleted: {1}' -f $RequestId, $_.Exception.Message) }
                $pendingStore.Remove($stale)
            }
        }
        finally {
            $pendingStore.Close()
        }
    }

    $tag = 'WinCert request ' + $RequestId
    $requestDirectory = Join-Path -Path $env:ProgramData -ChildPath 'WinCertOrchestrator\requests'
    $savedFile = Join-Path -Path $requestDirectory -ChildPath ($RequestId + '.csr')

    # 1. The provider.
    $provider = Resolve-WinCertPrivateCryptoProvider -Name $ProviderName -Cmdlet $PSCmdlet

    # 2. A request made before for this id (a redelivered job): the same CSR, no second key.
    $pending = Get-PendingCertificate
    $saved = Read-SavedRequest -Path $savedFile
    if ($pending.Count -gt 0 -and $null -ne $saved) {
        $savedKey = Get-RequestPublicKey -Der $saved
        foreach ($candidate in $pending) {
            if ($null -ne $savedKey -and [System.Convert]::ToBase64String($candidate.PublicKey.EncodedKeyValue.RawData) -eq $savedKey) {
                return ([pscustomobject]@{
                        RequestId = $RequestId
                        Csr       = [System.IO.File]::ReadAllText($savedFile)
                        Outcome   = 'existing'
                    } | ConvertTo-Json -Compress)
            }
        }
    }
    if ($pending.Count -gt 0) { Remove-PendingCertificate -Certificate $pending }
    if (Test-Path -LiteralPath $savedFile) { Remove-Item -LiteralPath $savedFile -Force }

    # 3. What the request file will carry.
    $sanValues = @($DnsName) + @($IpAddress) + @($Email) + @($Upn) + @($Uri) | Where-Object { $null -ne $_ }
    foreach ($value in (@($Subject, $ProviderName) + @($sanValues))) {
        if ($value -match '[\x00-\x1F\x7F]') {
            Stop-KeyGeneration -Message 'The subject, the provider name and the subject alternative names must not contain control characters (they would break the request file).'
        }
    }
    if ($KeyAlgorithm -eq 'RSA') {
        if ($KeyLength -eq 0) { $KeyLength = 2048 }
        if ($KeyLength -notin 2048, 3072, 4096) {
            Stop-KeyGeneration -Message ('KeyLength {0} is not supported for RSA keys; use 2048, 3072 or 4096.' -f $KeyLength)
        }
    }
    else {
        $bits = if ($KeyAlgorithm -eq 'ECDSA_P256') { 256 } else { 384 }
        if ($KeyLength -notin 0, $bits) {
            Stop-KeyGeneration -Message ('KeyLength {0} does not fit {1}; leave it out (the curve fixes the key size).' -f $KeyLength, $KeyAlgorithm)
        }
        $KeyLength = $bits
    }
    $sanExtension = ConvertTo-SanExtension
    if ($provider.Kind -eq 'CSP') {
        $holds = 'RSA'
        if ($provider.Type -in 3, 13, 18) { $holds = 'DSA' }
        $family = if ($KeyAlgorithm -eq 'RSA') { 'RSA' } else { 'ECDSA' }
        if ($family -ne $holds) {
            Stop-KeyGeneration -Message ("Cryptographic provider '{0}' is a CryptoAPI provider that holds {1} keys only; it cannot generate a {2} key. Use a key storage provider such as 'Microsoft Software Key Storage Provider'." -f $provider.Name, $holds, $KeyAlgorithm)
        }
    }

    # 4. The request file: every string value in double quotes, inner quotes and % doubled.
    $lines = [System.Collections.Generic.List[string]]::new()
    $lines.Add('[Version]')
    $lines.Add('Signature="$Windows NT$"')
    $lines.Add('')
    $lines.Add('[NewRequest]')
    $lines.Add(('Subject = {0}' -f (ConvertTo-InfString -Value $Subject)))
    $lines.Add(('ProviderName = {0}' -f (ConvertTo-InfString -Value $provider.Name)))
    if ($provider.Kind -eq 'CSP') {
        $lines.Add(('ProviderType = {0}' -f $provider.Type))
        $lines.Add('KeySpec = 1')
    }
    else {
        $lines.Add('KeySpec = 0')
    }
    $lines.Add(('KeyAlgorithm = {0}' -f $KeyAlgorithm))
    $lines.Add(('KeyLength = {0}' -f $KeyLength))
    if ($KeyAlgorithm -eq 'RSA') { $lines.Add('KeyUsage = 0xa0') } else { $lines.Add('KeyUsage = 0x80') }
    $lines.Add('MachineKeySet = TRUE')
    $lines.Add(('Exportable = {0}' -f $(if ($Exportable) { 'TRUE' } else { 'FALSE' })))
    $lines.Add('RequestType = PKCS10')
    $lines.Add('HashAlgorithm = SHA256')
    $lines.Add('SMIME = FALSE')
    $lines.Add('Silent = TRUE')
    $lines.Add(('FriendlyName = {0}' -f (ConvertTo-InfString -Value $tag)))
    if ($null -ne $sanExtension) {
        $lines.Add('')
        $lines.Add('[Extensions]')
        $lines.Add(('2.5.29.17 = {0}' -f [System.Convert]::ToBase64String($sanExtension)))
    }

    # 5. certreq -new -q -machine <inf> <csr>, unique temporary files deleted in finally.
    $unique = [guid]::NewGuid().ToString('N')
    $temp = [System.IO.Path]::GetTempPath()
    $infFile = Join-Path -Path $temp -ChildPath ('wincert-{0}.inf' -f $unique)
    $csrFile = Join-Path -Path $temp -ChildPath ('wincert-{0}.csr' -f $unique)
    $result = $null
    $runError = $null
    $csrText = $null
    try {
        [System.IO.File]::WriteAllText($infFile, ($lines -join "`r`n") + "`r`n", [System.Text.Encoding]::Unicode)
        $certreq = Join-Path -Path $env:SystemRoot -ChildPath 'System32\certreq.exe'
        try {
            $result = Invoke-WinCertPrivateNativeCommand -FilePath $certreq -ArgumentList @('-new', '-q', '-machine', $infFile, $csrFile)
        }
        catch {
            $runError = $_.Exception.Message
        }
        if ($null -eq $runError -and $result.ExitCode -eq 0 -and (Test-Path -LiteralPath $csrFile)) {
            $csrText = [System.IO.File]::ReadAllText($csrFile)
        }
    }
    finally {
        foreach ($file in @($infFile, $csrFile)) {
            if (Test-Path -LiteralPath $file) { Remove-Item -LiteralPath $file -Force }
        }
    }
    if ($null -ne $runError) {
        Stop-KeyGeneration -Message ('Key generation failed: certreq could not run: {0}' -f $runError)
    }
    if ($null -eq $csrText) {
        $detail = (@($result.Output -split "`r?`n" | ForEach-Object { $_.Trim() } | Where-Object { $_ }) -join ' ')
        Stop-KeyGeneration -Message ('Key generation failed: certreq -new exited with code {0}: {1}' -f $result.ExitCode, $detail)
    }

    # 6. The CSR as standard PEM, saved for this request id (written whole, then renamed).
    $body = ($csrText -replace '-----[^-]+-----', '') -replace '\s', ''
    $pem = [System.Text.StringBuilder]::new()
    [void]$pem.Append("-----BEGIN CERTIFICATE REQUEST-----`n")
    for ($i = 0; $i -lt $body.Length; $i += 64) {
        [void]$pem.Append($body.Substring($i, [System.Math]::Min(64, $body.Length - $i))).Append("`n")
    }
    [void]$pem.Append("-----END CERTIFICATE REQUEST-----`n")
    $csrPem = $pem.ToString()
    if (-not (Test-Path -LiteralPath $requestDirectory)) { [void](New-Item -ItemType Directory -Path $requestDirectory -Force) }
    $partial = Join-Path -Path $requestDirectory -ChildPath ('.{0}.{1}.tmp' -f $RequestId, $unique)
    try {
        [System.IO.File]::WriteAllText($partial, $csrPem, [System.Text.Encoding]::ASCII)
        Move-Item -LiteralPath $partial -Destination $savedFile -Force
    }
    finally {
        if (Test-Path -LiteralPath $partial) { Remove-Item -LiteralPath $partial -Force }
    }
    if ((Get-PendingCertificate).Count -eq 0) {
        Stop-KeyGeneration -Message ('Key generation failed: certreq left no pending key tagged {0} in LocalMachine\REQUEST.' -f $RequestId)
    }

    [pscustomobject]@{
        RequestId = $RequestId
        Csr       = $csrPem
        Outcome   = 'created'
    } | ConvertTo-Json -Compress
}

function Install-WinCertSignedCertificate {
    <#
    .SYNOPSIS
    Installs an issued certificate so it pairs with its pending key; one compact JSON string
    {"Thumbprint", "Outcome": "installed" | "already_present", "HasPrivateKey", "RequestId"}.

    .DESCRIPTION
    Order: the store LocalMachine\<StorePath> exists; the data is a certificate (DER); already
    there with a private key -> already_present (nothing else changes, except that the leftover
    of a move interrupted after the store's Add, a copy with the private key still in My when
    StorePath is not My, is removed with what was left of its request: the tag friendly name in
    the store, the pending dummy, the saved request; RequestId is then the tag's, else $null);
    chain certificates (-ChainData) to CA, self-signed ones to Root, when absent; when StorePath
    is not My and My already holds the certificate with its private key (a completion
    interrupted after certreq -accept), no accept: it is moved from there (continue below, the My
    copy removed; installed); else the pending key in LocalMachine\REQUEST with the
    certificate's public key (else WinCert.NoMatchingRequest) and certreq -accept -machine
    (argument array; with an untrusted root it falls back to X509Enrollment InstallResponse with
    AllowUntrustedRoot); then the move from My to the store path, the dummy certificate and the
    saved request (RequestId from its tag) removed; a fresh read of the store must show the
    certificate with a usable private key (else WinCert.ImportVerificationFailed; the
    certificate is left in place).

    Errors: WinCert.StoreNotFound, WinCert.StoreOpenFailed, WinCert.PfxImportFailed (not a
    certificate), WinCert.NoMatchingRequest, WinCert.ImportVerificationFailed.
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

        [object[]]$ChainData
    )

    $ErrorActionPreference = 'Stop'

    # The public key of a certificate as comparable text (algorithm, parameters, key bits).
    function Get-PublicKeyText {
        param(
            [System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate
        )
        $key = $Certificate.PublicKey
        return '{0}|{1}|{2}' -f $key.Oid.Value, [System.Convert]::ToBase64String($key.EncodedParameters.RawData),
        [System.Convert]::ToBase64String($key.EncodedKeyValue.RawData)
    }

    # The request id of a 'WinCert request <RequestId>' friendly name, or $null.
    function Get-RequestTag {
        param(
            [string]$FriendlyName
        )
        if ($FriendlyName -and $FriendlyName.StartsWith('WinCert request ', [System.StringComparison]::Ordinal)) {
            return $FriendlyName.Substring(16)
        }
        return $null
    }

    # The pending key (dummy certificate in LocalMachine\REQUEST) with $Wanted's public key, or $null.
    function Find-PendingKey {
        param(
            [string]$Wanted
        )
        $found = $null
        $pendingStore = Open-WinCertPrivateStore -Name 'REQUEST' -Flags ([System.Security.Cryptography.X509Certificates.OpenFlags]::ReadOnly)
        try {
            foreach ($candidate in $pendingStore.Certificates) {
                if ($candidate.HasPrivateKey -and (Get-PublicKeyText -Certificate $candidate) -eq $Wanted) { $found = $candidate }
            }
        }
        finally {
            $pendingStore.Close()
        }
        return $found
    }

    # The pending request is done: its dummy certificate (certreq removes it) and its saved CSR.
    function Complete-PendingRequest {
        param(
            [System.Security.Cryptography.X509Certificates.X509Certificate2]$Pending,
            [string]$Id
        )
        if ($null -ne $Pending) {
            $pendingStore = Open-WinCertPrivateStore -Name 'REQUEST' -Flags ([System.Security.Cryptography.X509Certificates.OpenFlags]::ReadWrite)
            try {
                foreach ($candidate in @($pendingStore.Certificates)) {
                    if ($candidate.Thumbprint -eq $Pending.Thumbprint) { $pendingStore.Remove($candidate) }
                }
            }
            finally {
                $pendingStore.Close()
            }
        }
        if ($Id) {
            $savedFile = Join-Path -Path $env:ProgramData -ChildPath ('WinCertOrchestrator\requests\{0}.csr' -f $Id)
            if (Test-Path -LiteralPath $savedFile) { Remove-Item -LiteralPath $savedFile -Force }
        }
    }

    # Removes the certificate $Thumbprint from LocalMachine\My (the store entry only, not its key,
    # which the copy in the store path shares).
    function Remove-MyCopy {
        param(
            [string]$Thumbprint
        )
        $my = Open-WinCertPrivateStore -Name 'My' -Flags $readWrite
        try {
            foreach ($certificate in @($my.Certificates)) {
                if ($certificate.Thumbprint -eq $Thumbprint) { $my.Remove($certificate) }
            }
        }
        finally {
            $my.Close()
        }
    }

    $readWrite = [System.Security.Cryptography.X509Certificates.OpenFlags]'ReadWrite, OpenExistingOnly'
    $intoMy = $StorePath -ieq 'My'

    # 1. The store.
    $store = Open-WinCertPrivateTargetStore -StorePath $StorePath -Flags $readWrite -Cmdlet $PSCmdlet
    try {
        # 2. The certificate.
        try {
            $issued = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new($CertificateData)
        }
        catch {
            $message = 'The certificate data could not be imported: Cannot find the requested object.'
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.PfxImportFailed' `
                        -Category InvalidData -Target $StorePath `
                        -Exception ([System.Security.Cryptography.CryptographicException]::new($message))))
        }
        $thumbprint = $issued.Thumbprint
        $wanted = Get-PublicKeyText -Certificate $issued

        # 3. Already installed (a redelivered completion). A copy with the key still in My is the
        # leftover of a move interrupted between the store's Add and My's Remove: it goes, with
        # what the interrupted completion had not removed yet (tag, dummy, saved request).
        foreach ($certificate in $store.Certificates) {
            if ($certificate.Thumbprint -eq $thumbprint -and $certificate.HasPrivateKey) {
                $requestId = $null
                $leftover = $null
                if (-not $intoMy) { $leftover = Find-WinCertPrivateStoredCertificate -StorePath 'My' -Thumbprint $thumbprint }
                # only this request's own leftover (still tagged), never a copy someone else put in My
                if ($null -ne $leftover -and $leftover.HasPrivateKey -and $null -ne (Get-RequestTag -FriendlyName $leftover.FriendlyName)) {
                    $requestId = Get-RequestTag -FriendlyName $certificate.FriendlyName
                    if ($null -eq $requestId) { $requestId = Get-RequestTag -FriendlyName $leftover.FriendlyName }
                    Remove-MyCopy -Thumbprint $thumbprint
                    if ($null -ne (Get-RequestTag -FriendlyName $certificate.FriendlyName)) { $certificate.FriendlyName = '' }
                    $pending = Find-PendingKey -Wanted $wanted
                    if ($null -eq $requestId -and $null -ne $pending) { $requestId = Get-RequestTag -FriendlyName $pending.FriendlyName }
                    Complete-PendingRequest -Pending $pending -Id $requestId
                }
                return ([pscustomobject]@{
                        Thumbprint    = $thumbprint
                        Outcome       = 'already_present'
                        HasPrivateKey = $true
                        RequestId     = $requestId
                    } | ConvertTo-Json -Compress)
            }
        }

        # 4. Chain certificates first, so that certreq can build the chain.
        foreach ($item in @($ChainData | Where-Object { $null -ne $_ })) {
            $chainCertificate = [System.Security.Cryptography.X509Certificates.X509Certificate2]::new([byte[]]$item)
            $target = if ($chainCertificate.Subject -eq $chainCertificate.Issuer) { 'Root' } else { 'CA' }
            $chainStore = Open-WinCertPrivateStore -Name $target -Flags ([System.Security.Cryptography.X509Certificates.OpenFlags]::ReadWrite)
            try {
                if (-not ($chainStore.Certificates | Where-Object { $_.Thumbprint -eq $chainCertificate.Thumbprint })) {
                    $chainStore.Add($chainCertificate)
                }
            }
            finally {
                $chainStore.Close()
            }
        }

        # 5. Accepted before (a completion interrupted between certreq -accept and the move): My
        # already holds it with its key, so no accept; it is moved from there (steps 7 to 9) and
        # the request id is the tag certreq gave it. Else the pending key with the certificate's
        # public key (WinCert.NoMatchingRequest without one).
        $accepted = $null
        if (-not $intoMy) {
            $accepted = Find-WinCertPrivateStoredCertificate -StorePath 'My' -Thumbprint $thumbprint
            # only a copy certreq tagged for a request counts as accepted; any other copy in My stays
            if ($null -ne $accepted -and (-not $accepted.HasPrivateKey -or $null -eq (Get-RequestTag -FriendlyName $accepted.FriendlyName))) { $accepted = $null }
        }
        $pending = Find-PendingKey -Wanted $wanted
        if ($null -ne $accepted) {
            $requestId = Get-RequestTag -FriendlyName $accepted.FriendlyName
            if ($null -eq $requestId -and $null -ne $pending) { $requestId = Get-RequestTag -FriendlyName $pending.FriendlyName }
            $wasInMy = $false  # the copy in My is this completion's own: removed after the move
        }
        elseif ($null -eq $pending) {
            $message = 'Certificate {0} ({1}) matches no pending request: no key in LocalMachine\REQUEST has its public key.' -f $thumbprint, $issued.Subject
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.NoMatchingRequest' `
                        -Category ObjectNotFound -Target $thumbprint `
                        -Exception ([System.Management.Automation.ItemNotFoundException]::new($message))))
        }
        else {
            $requestId = Get-RequestTag -FriendlyName $pending.FriendlyName
            $wasInMy = $null -ne (Find-WinCertPrivateStoredCertificate -StorePath 'My' -Thumbprint $thumbprint)
        }

        # 6. certreq -accept -machine <cer>; an untrusted root falls back to InstallResponse.
        if ($null -eq $accepted) {
            $cerFile = Join-Path -Path ([System.IO.Path]::GetTempPath()) -ChildPath ('wincert-{0}.cer' -f [guid]::NewGuid().ToString('N'))
            $acceptError = $null
            try {
                [System.IO.File]::WriteAllBytes($cerFile, $issued.RawData)
                $certreq = Join-Path -Path $env:SystemRoot -ChildPath 'System32\certreq.exe'
                $result = Invoke-WinCertPrivateNativeCommand -FilePath $certreq -ArgumentList @('-accept', '-q', '-machine', $cerFile)
                if ($result.ExitCode -ne 0) {
                    $detail = (@($result.Output -split "`r?`n" | ForEach-Object { $_.Trim() } | Where-Object { $_ }) -join ' ')
                    if ($detail -match '0x800b0109|0x800b010a') {
                        $enrollment = New-Object -ComObject 'X509Enrollment.CX509Enrollment'
                        $enrollment.Initialize(2)
                        $enrollment.InstallResponse(4, [System.Convert]::ToBase64String($issued.RawData), 1, '')
                    }
                    else {
                        $acceptError = 'certreq -accept exited with code {0}: {1}' -f $result.ExitCode, $detail
                    }
                }
            }
            catch {
                $acceptError = $_.Exception.Message
            }
            finally {
                if (Test-Path -LiteralPath $cerFile) { Remove-Item -LiteralPath $cerFile -Force }
            }
            $accepted = Find-WinCertPrivateStoredCertificate -StorePath 'My' -Thumbprint $thumbprint
            if ($null -eq $accepted -or -not $accepted.HasPrivateKey) {
                if ($null -eq $acceptError) { $acceptError = 'LocalMachine\My does not show it with its private key afterwards' }
                $message = 'Certificate {0} could not be installed with its pending key: {1}' -f $thumbprint, $acceptError
                $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.ImportVerificationFailed' `
                            -Category InvalidResult -Target $thumbprint))
            }
        }

        # 7. Move it to the store path; no friendly name (the tag was the request's).
        if (-not $intoMy) {
            $store.Add($accepted)
            if (-not $wasInMy) { Remove-MyCopy -Thumbprint $thumbprint }
        }
        $store.Close()
        $store.Open($readWrite)
        foreach ($certificate in $store.Certificates) {
            if ($certificate.Thumbprint -eq $thumbprint -and $certificate.FriendlyName) { $certificate.FriendlyName = '' }
        }

        # 8. The pending request is done: its dummy certificate (certreq removes it) and saved CSR.
        Complete-PendingRequest -Pending $pending -Id $requestId

        # 9. Verify with a fresh read.
        $stored = Find-WinCertPrivateStoredCertificate -StorePath $StorePath -Thumbprint $thumbprint
        if ($null -eq $stored -or -not $stored.HasPrivateKey -or -not (Test-WinCertPrivateKeyUsable -Certificate $stored)) {
            $message = 'Certificate {0} was installed into LocalMachine\{1} but the store does not show it with a usable private key.' -f $thumbprint, $StorePath
            $PSCmdlet.ThrowTerminatingError((New-WinCertPrivateErrorRecord -Message $message -ErrorId 'WinCert.ImportVerificationFailed' `
                        -Category InvalidResult -Target $thumbprint))
        }

        [pscustomobject]@{
            Thumbprint    = $thumbprint
            Outcome       = 'installed'
            HasPrivateKey = $true
            RequestId     = $requestId
        } | ConvertTo-Json -Compress
    }
    finally {
        if ($null -ne $store) { $store.Close() }
    }
}
