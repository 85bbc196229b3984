# WinCert Orchestrator: inventory of a LocalMachine certificate store.
# Target: Windows PowerShell 5.1 on .NET Framework 4.7+ (also runs on PowerShell 7).
# Loaded once per runspace after Common.ps1 (or pre-installed as a module for JEA endpoints).
# Public functions are defined at column 0; helpers shared with other functions are the private
# *-WinCertPrivate* functions of Common.ps1, the others are nested inside the function that uses
# them. The simulator implements the same function in simulator/commands/inventory.py; both must
# produce the same objects, warnings and errors (tests/contract checks names, parameters and
# error ids).

function Get-WinCertInventory {
    <#
    .SYNOPSIS
    Lists every certificate of LocalMachine\<StorePath> as compact JSON records.

    .DESCRIPTION
    The store is opened with X509Store (ReadOnly, OpenExistingOnly): StorePath is a store name,
    never a provider path or a wildcard. Output: strings of one or more compact JSON records
    separated by a newline ("`n"; a string ends when it reaches 64 KiB), one record per
    certificate. Record keys: Thumbprint, Subject, Issuer, SerialNumber,
    NotBefore, NotAfter (UTC, yyyy-MM-ddTHH:mm:ssZ), HasPrivateKey, FriendlyName, KeyAlgorithm
    (RSA, ECDSA, DSA, Ed25519, Ed448 or the key OID), KeySize (bits or null), Sans (a list of
    {Type, Value}; Type is dns, ip, email, upn, uri, dn or other) and RawData (base64 DER).
    A certificate that cannot be read is skipped with "Skipped certificate <thumbprint>: <reason>".
    A certificate whose subject alternative name extension cannot be decoded is reported with
    no SANs and a warning. A missing store is a terminating error with id WinCert.StoreNotFound;
    a store that exists but cannot be opened (e.g. access denied), WinCert.StoreOpenFailed.

    Incremental inventory: KnownThumbprint lists the certificates the caller already knows
    (upper-case hex thumbprints, matched case-insensitively; each element may hold several,
    separated by commas: the list is every element's comma-separated parts, in order). Every
    other certificate is written in full, as above; the known ones present in the store are
    written together, after them, as ONE record
    {"KnownCertificates": [[Index, HasPrivateKey, FriendlyName], ...]} (Index: the 0-based
    position of the thumbprint in that list, its first occurrence; no parsed fields, no
    RawData), only when KnownThumbprint is not empty. About 12 bytes per known certificate
    instead of a record each.
    #>
    [CmdletBinding()]
    [OutputType([string])]
    param(
        [Parameter(Mandatory)]
        [ValidateNotNullOrEmpty()]
        [string]$StorePath,

        [AllowEmptyCollection()]
        [string[]]$KnownThumbprint = @()
    )

    # Any error inside becomes terminating, so the per-certificate try/catch below turns it
    # into a warning instead of a stray non-terminating error that would fail the whole job.
    $ErrorActionPreference = 'Stop'

    # Reads one DER element at $Offset that must end at or before $End (mirrors
    # simulator/windows/der.py: low and high tag form, 1-4 length octets, no indefinite length).
    function Read-DerElement {
        param(
            [byte[]]$Data,
            [int]$Offset,
            [int]$End
        )
        if ($Offset -ge $End) { throw 'DER: unexpected end of data' }
        $first = [int]$Data[$Offset]
        $tagNumber = $first -band 0x1F
        $pos = $Offset + 1
        if ($tagNumber -eq 0x1F) {
            $tagNumber = 0
            do {
                if ($pos -ge $End) { throw 'DER: unexpected end of data' }
                $octet = [int]$Data[$pos]
                $pos++
                $tagNumber = ($tagNumber * 128) + ($octet -band 0x7F)
            } while (($octet -band 0x80) -ne 0)
        }
        if ($pos -ge $End) { throw 'DER: unexpected end of data' }
        $lengthOctet = [int]$Data[$pos]
        $pos++
        if ($lengthOctet -lt 0x80) {
            $length = [long]$lengthOctet
        }
        elseif ($lengthOctet -eq 0x80) {
            throw 'DER: indefinite length is not allowed'
        }
        else {
            $count = $lengthOctet -band 0x7F
            if ($count -gt 4) { throw 'DER: length field too long' }
            $length = [long]0
            for ($i = 0; $i -lt $count; $i++) {
                if ($pos -ge $End) { throw 'DER: unexpected end of data' }
                $length = ($length * 256) + [int]$Data[$pos]
                $pos++
            }
        }
        if ($length -gt ($End - $pos)) { throw 'DER: length exceeds the available data' }
        [pscustomobject]@{
            TagClass     = $first -shr 6
            Constructed  = (($first -band 0x20) -ne 0)
            TagNumber    = $tagNumber
            Start        = $Offset
            ContentStart = $pos
            End          = $pos + [int]$length
        }
    }

    # The elements that exactly fill $Data[$Start..$End-1].
    function Read-DerChildren {
        param(
            [byte[]]$Data,
            [int]$Start,
            [int]$End
        )
        $items = [System.Collections.Generic.List[object]]::new()
        $pos = $Start
        while ($pos -lt $End) {
            $item = Read-DerElement -Data $Data -Offset $pos -End $End
            $items.Add($item)
            $pos = $item.End
        }
        return , $items
    }

    # Exactly one element spanning $Data[$Start..$End-1].
    function Read-DerSingle {
        param(
            [byte[]]$Data,
            [int]$Start,
            [int]$End
        )
        $item = Read-DerElement -Data $Data -Offset $Start -End $End
        if ($item.End -ne $End) { throw 'DER: trailing data' }
        return $item
    }

    function Get-DerBytes {
        param(
            [byte[]]$Data,
            [int]$Start,
            [int]$End
        )
        $buffer = [byte[]]::new($End - $Start)
        if ($buffer.Length -gt 0) { [System.Array]::Copy($Data, $Start, $buffer, 0, $buffer.Length) }
        return , $buffer
    }

    function ConvertTo-HexText {
        param(
            [byte[]]$Data,
            [int]$Start,
            [int]$End
        )
        if ($End -le $Start) { return '' }
        return [System.BitConverter]::ToString($Data, $Start, $End - $Start).Replace('-', '')
    }

    function ConvertFrom-DerOid {
        param(
            [byte[]]$Data,
            [int]$Start,
            [int]$End
        )
        if ($End -le $Start) { throw 'DER: empty OBJECT IDENTIFIER' }
        $arcs = [System.Collections.Generic.List[System.Numerics.BigInteger]]::new()
        $value = [System.Numerics.BigInteger]::Zero
        $pending = $false
        for ($i = $Start; $i -lt $End; $i++) {
            $octet = [int]$Data[$i]
            $value = [System.Numerics.BigInteger]::Add(
                [System.Numerics.BigInteger]::Multiply($value, [System.Numerics.BigInteger]128),
                [System.Numerics.BigInteger]($octet -band 0x7F))
            $pending = (($octet -band 0x80) -ne 0)
            if (-not $pending) {
                $arcs.Add($value)
                $value = [System.Numerics.BigInteger]::Zero
            }
        }
        if ($pending) { throw 'DER: truncated OBJECT IDENTIFIER' }
        $firstArc = $arcs[0]
        if ([System.Numerics.BigInteger]::Compare($firstArc, [System.Numerics.BigInteger]40) -lt 0) {
            $head = @('0', $firstArc.ToString())
        }
        elseif ([System.Numerics.BigInteger]::Compare($firstArc, [System.Numerics.BigInteger]80) -lt 0) { $head = @('1', ([System.Numerics.BigInteger]::Subtract($firstArc, [System.Numerics.BigInteger]40)).ToString())
        }
        else {
            $head = @('2', ([System.Numerics.BigInteger]::Subtract($firstArc, [System.Numerics.BigInteger]80)).ToString())
        }
        $parts = [System.Collections.Generic.List[string]]::new()
        $parts.AddRange([string[]]$head)
        for ($i = 1; $i -lt $arcs.Count; $i++) { $parts.Add($arcs[$i].ToString()) }
        return ($parts -join '.')
    }

    # Dotted IPv4, or RFC 5952 IPv6 text (same algorithm as simulator format_ip, not the
    # platform formatter, so both sides print the same). $null for other lengths.
    function ConvertTo-IPAddressText {
        param(
            [byte[]]$Data,
            [int]$Start,
            [int]$End
        )
        $count = $End - $Start
        if ($count -eq 4) {
            return ('{0}.{1}.{2}.{3}' -f $Data[$Start], $Data[$Start + 1], $Data[$Start + 2], $Data[$Start + 3])
        }
        if ($count -ne 16) { return $null }
        $groups = [int[]]::new(8)
        for ($i = 0; $i -lt 8; $i++) {
            $groups[$i] = ([int]$Data[$Start + 2 * $i] * 256) + [int]$Data[$Start + 2 * $i + 1]
        }
        $bestStart = -1
        $bestLength = 0
        $runStart = -1
        for ($i = 0; $i -le 8; $i++) {
            if ($i -lt 8 -and $groups[$i] -eq 0) {
                if ($runStart -lt 0) { $runStart = $i }
            }
            elseif ($runStart -ge 0) {
                if (($i - $runStart) -gt $bestLength) {
                    $bestStart = $runStart
                    $bestLength = $i - $runStart
                }
                $runStart = -1
            }
        }
        $text = [string[]]::new(8)
        for ($i = 0; $i -lt 8; $i++) { $text[$i] = '{0:x}' -f $groups[$i] }
        if ($bestLength -lt 2) { return ($text -join ':') }
        $left = if ($bestStart -gt 0) { $text[0..($bestStart - 1)] -join ':' } else { '' }
        $rightStart = $bestStart + $bestLength
        $right = if ($rightStart -lt 8) { $text[$rightStart..7] -join ':' } else { '' }
        return ($left + '::' + $right)
    }

    # Structured entries of a SubjectAltName extension value (GeneralNames), decoded from DER:
    # never Format(), whose text is localized. Throws on malformed data.
    function ConvertFrom-SanExtension {
        param(
            [byte[]]$Data
        )
        $utf8 = [System.Text.UTF8Encoding]::new($false, $false)
        $entries = [System.Collections.Generic.List[object]]::new()
        $outer = Read-DerSingle -Data $Data -Start 0 -End $Data.Length
        if ($outer.TagClass -ne 0 -or $outer.TagNumber -ne 16) { throw 'DER: GeneralNames must be a SEQUENCE' }
        foreach ($name in (Read-DerChildren -Data $Data -Start $outer.ContentStart -End $outer.End)) {
            if ($name.TagClass -ne 2 -or $name.TagNumber -gt 8) {
                throw ('DER: unsupported GeneralName tag {0}' -f $name.TagNumber)
            }
            $start = $name.ContentStart
            $end = $name.End
            switch ($name.TagNumber) {
                0 {
                    $items = Read-DerChildren -Data $Data -Start $start -End $end
                    if ($items.Count -ne 2 -or $items[0].TagClass -ne 0 -or $items[0].TagNumber -ne 6 -or
                        $items[1].TagClass -ne 2 -or $items[1].TagNumber -ne 0) {
                        throw 'DER: malformed otherName'
                    }
                    $typeId = ConvertFrom-DerOid -Data $Data -Start $items[0].ContentStart -End $items[0].End
                    $inner = Read-DerSingle -Data $Data -Start $items[1].ContentStart -End $items[1].End
                    if ($typeId -eq '1.3.6.1.4.1.311.20.2.3' -and $inner.TagClass -eq 0 -and
                        -not $inner.Constructed -and $inner.TagNumber -eq 12) {
                        $value = $utf8.GetString($Data, $inner.ContentStart, $inner.End - $inner.ContentStart)
                        $entries.Add([pscustomobject]@{ Type = 'upn'; Value = $value })
                    }
                    else {
                        $hex = ConvertTo-HexText -Data $Data -Start $inner.Start -End $inner.End
                        $entries.Add([pscustomobject]@{ Type = 'other'; Value = ('{0}={1}' -f $typeId, $hex) })
                    }
                }
                { $_ -in 1, 2, 6 } {
                    $kind = @{ 1 = 'email'; 2 = 'dns'; 6 = 'uri' }[$name.TagNumber]
                    $value = $utf8.GetString($Data, $start, $end - $start)
                    $entries.Add([pscustomobject]@{ Type = $kind; Value = $value })
                }
                4 {
                    $inner = Read-DerSingle -Data $Data -Start $start -End $end
                    $nameBytes = Get-DerBytes -Data $Data -Start $inner.Start -End $inner.End
                    $dn = [System.Security.Cryptography.X509Certificates.X500DistinguishedName]::new($nameBytes)
                    $entries.Add([pscustomobject]@{ Type = 'dn'; Value = $dn.Name })
                }
                7 {
                    $ip = ConvertTo-IPAddressText -Data $Data -Start $start -End $end
                    if ($null -eq $ip) {
                        $hex = ConvertTo-HexText -Data $Data -Start $start -End $end
                        $entries.Add([pscustomobject]@{ Type = 'other'; Value = ('iPAddress={0}' -f $hex) })
                    }
                    else {
                        $entries.Add([pscustomobject]@{ Type = 'ip'; Value = $ip })
                    }
                }
                8 {
                    $oid = ConvertFrom-DerOid -Data $Data -Start $start -End $end
                    $entries.Add([pscustomobject]@{ Type = 'other'; Value = ('registeredID={0}' -f $oid) })
                }
                default {
                    $label = @{ 3 = 'x400Address'; 5 = 'ediPartyName' }[$name.TagNumber]
                    $hex = ConvertTo-HexText -Data $Data -Start $start -End $end
                    $entries.Add([pscustomobject]@{ Type = 'other'; Value = ('{0}={1}' -f $label, $hex) })
                }
            }
        }
        return , $entries.ToArray()
    }

    # Key size in bits, or $null when the key cannot be loaded or the algorithm is not listed.
    function Get-PublicKeySize {
        param(
            [System.Security.Cryptography.X509Certificates.X509Certificate2]$Certificate,
            [string]$KeyOid
        )
        if ($KeyOid -eq '1.3.101.112') { return 256 }
        if ($KeyOid -eq '1.3.101.113') { return 456 }
        $key = $null
        try {
            switch ($KeyOid) {
                '1.2.840.113549.1.1.1' {
                    $key = [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPublicKey($Certificate)
                }
                '1.2.840.10045.2.1' {
                    $key = [System.Security.Cryptography.X509Certificates.ECDsaCertificateExtensions]::GetECDsaPublicKey($Certificate)
                }
                '1.2.840.10040.4.1' {
                    $key = [System.Security.Cryptography.X509Certificates.DSACertificateExtensions]::GetDSAPublicKey($Certificate)
                }
            }
            if ($null -eq $key) { return $null }
            return [int]$key.KeySize
        }
        catch {
            # Unsupported curve, explicit EC parameters, or a .NET without the API: size unknown.
            return $null
        }
        finally {
            if ($null -ne $key) { $key.Dispose() }
        }
    }

    $keyAlgorithms = @{
        '1.2.840.113549.1.1.1' = 'RSA'
        '1.2.840.10045.2.1'    = 'ECDSA'
        '1.2.840.10040.4.1'    = 'DSA'
        '1.3.101.112'          = 'Ed25519'
        '1.3.101.113'          = 'Ed448'
    }
    $invariant = [System.Globalization.CultureInfo]::InvariantCulture
    $timeFormat = "yyyy-MM-dd'T'HH:mm:ss'Z'"

    # Thumbprint -> its first index in the KnownThumbprint list (case-insensitive). Each element
    # may hold several thumbprints separated by commas (the worker sends ONE such string: one PSRP
    # string instead of thousands); the list is every element's comma-separated parts, in order.
    $known = [System.Collections.Generic.Dictionary[string, int]]::new([System.StringComparer]::OrdinalIgnoreCase)
    $index = 0
    foreach ($element in $KnownThumbprint) {
        foreach ($value in ([string]$element).Split([char]',')) {
            if ($value.Length -gt 0 -and -not $known.ContainsKey($value)) { $known[$value] = $index }
            $index++
        }
    }
    $knownFound = [System.Collections.Generic.List[object]]::new()

    # Full records go out in batches: one string of newline-separated records per ~64 KiB (one
    # PSRP object instead of one per certificate; the caller's per-object cost dominated).
    $batch = [System.Text.StringBuilder]::new()
    $batchLimit = 65536

    $store = Open-WinCertPrivateTargetStore -StorePath $StorePath -Flags 'ReadOnly, OpenExistingOnly' -Cmdlet $PSCmdlet
    try {
        foreach ($certificate in $store.Certificates) {
            $thumbprint = '<unknown>'
            try {
                $thumbprint = $certificate.Thumbprint
                if ($known.ContainsKey($thumbprint)) {
                    $knownFound.Add([object[]]@([int]$known[$thumbprint], [bool]$certificate.HasPrivateKey, [string]$certificate.FriendlyName))
                    continue
                }
                $keyOid = $certificate.PublicKey.Oid.Value
                $keyAlgorithm = $keyAlgorithms[$keyOid]
                if ($null -eq $keyAlgorithm) { $keyAlgorithm = $keyOid }

                $sans = @()
                $sanExtension = $certificate.Extensions['2.5.29.17']  # X509ExtensionCollection indexer by OID (null if absent)
                if ($null -ne $sanExtension) {
                    try {
                        $sans = ConvertFrom-SanExtension -Data $sanExtension.RawData
                    }
                    catch {
                        Write-Warning ('Certificate {0}: the subject alternative name extension could not be decoded ({1}); reported without SANs.' -f $thumbprint, $_.Exception.Message)
                        $sans = @()
                    }
                }

                $record = [pscustomobject]@{
                    Thumbprint    = $thumbprint
                    Subject       = $certificate.Subject
                    Issuer        = $certificate.Issuer
                    SerialNumber  = $certificate.SerialNumber
                    NotBefore     = $certificate.NotBefore.ToUniversalTime().ToString($timeFormat, $invariant)
                    NotAfter      = $certificate.NotAfter.ToUniversalTime().ToString($timeFormat, $invariant)
                    HasPrivateKey = [bool]$certificate.HasPrivateKey
                    FriendlyName  = [string]$certificate.FriendlyName
                    KeyAlgorithm  = $keyAlgorithm
                    KeySize       = Get-PublicKeySize -Certificate $certificate -KeyOid $keyOid
                    Sans          = [object[]]@($sans)
                    RawData       = [System.Convert]::ToBase64String($certificate.RawData)
                } | ConvertTo-Json -Compress -Depth 4
                if ($batch.Length -gt 0) { [void]$batch.Append("`n") }
                [void]$batch.Append($record)
                if ($batch.Length -ge $batchLimit) {
                    $batch.ToString()
                    [void]$batch.Clear()
                }
            }
            catch {
                Write-Warning ('Skipped certificate {0}: {1}' -f $thumbprint, $_.Exception.Message)
            }
            finally {
                $certificate.Reset()
            }
        }
    }
    finally {
        $store.Close()
    }
    if ($batch.Length -gt 0) { $batch.ToString() }
    if ($known.Count -gt 0) {
        # One record for every known certificate (a hashtable value is not unrolled, even with
        # zero or one element).
        @{ KnownCertificates = [object[]]$knownFound.ToArray() } | ConvertTo-Json -Compress -Depth 3
    }
}
