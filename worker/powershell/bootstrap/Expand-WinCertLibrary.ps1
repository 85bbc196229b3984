# WinCert Orchestrator: the bootstrap that defines the library functions a job needs.
# The worker sends this text unchanged with AddScript (not dot-sourced into a child scope: the
# runspace's own scope), followed in the SAME pipeline by the function call. -Library is the
# only value: base64 of the gzip-compressed UTF-8 text of the functions (worker/remote/library.py
# builds it from worker/powershell/*.ps1). The text is dot-sourced, so the functions stay defined
# in the runspace for later pipelines. Target: Windows PowerShell 5.1 / .NET 4.7+ (PowerShell 7 too).
param(
    [Parameter(Mandatory = $true)]
    [ValidateNotNullOrEmpty()]
    [string]$Library
)
$wincertLibraryStream = New-Object -TypeName System.IO.MemoryStream -ArgumentList @(, [System.Convert]::FromBase64String($Library))
$wincertLibraryGzip = New-Object -TypeName System.IO.Compression.GZipStream -ArgumentList $wincertLibraryStream, ([System.IO.Compression.CompressionMode]::Decompress)
$wincertLibraryReader = New-Object -TypeName System.IO.StreamReader -ArgumentList $wincertLibraryGzip, ([System.Text.Encoding]::UTF8)
try {
    $wincertLibraryText = $wincertLibraryReader.ReadToEnd()
}
finally {
    $wincertLibraryReader.Dispose()
}
$wincertLibraryBlock = [System.Management.Automation.ScriptBlock]::Create($wincertLibraryText)
Remove-Variable -Name @('wincertLibraryStream', 'wincertLibraryGzip', 'wincertLibraryReader', 'wincertLibraryText', 'Library') -ErrorAction SilentlyContinue
. $wincertLibraryBlock
Remove-Variable -Name 'wincertLibraryBlock' -ErrorAction SilentlyContinue
