"""Keyfactor job compatibility: turn a Keyfactor orchestrator job configuration into our job,
and render our results in Keyfactor's shapes.

Input: the job configuration the Keyfactor Universal Orchestrator hands the "IIS / WinCert"
extension (Keyfactor/iis-orchestrator): ``Capability`` (``CertStores.<Type>.<Job>``),
``OperationType``, ``Overwrite``, ``JobCertificate``, ``JobProperties``, ``SANs``,
``CertificateStoreDetails`` (``ClientMachine``, ``StorePath``, ``Properties`` as a JSON string or
object), ``ServerUsername`` / ``ServerPassword``, ``JobId``, ``JobHistoryId``::

    from producer import Client, from_keyfactor

    with Client() as client:                   # WINCERT_SECRET_KEYS seals the secrets
        job = from_keyfactor(Path("job.json").read_text(), client)
        client.submit(job)

Rules (the peer's semantics unless said otherwise):

* Keys are matched case-insensitively, ignoring spaces (``WinRm Protocol`` = ``WinRM Protocol``,
  ``Site Name`` = ``SiteName``). Bools may be JSON bools or the strings ``"true"``/``"false"``.
* Store type and job type come from ``Capability``: ``CertStores.{WinCert,IISU,WinSql}.
  {Inventory,Management,Reenrollment}`` (``ReEnrollment`` and ``ODKG`` are accepted too); the
  legacy ``IISBin`` / ``IISWBin`` / ``IISBindings`` types become IISU with a
  :class:`DeprecationWarning`. Management needs ``OperationType`` 2 (Add) or 3 (Remove).
* Server credentials: empty ``ServerUsername`` and ``ServerPassword`` mean the worker's own
  identity (``credential`` None). Otherwise an :class:`~producer.messages.InlineCredential`
  sealed with ``WINCERT_SECRET_KEYS`` by the :class:`~producer.client.Client`; plaintext only
  where the client's settings explicitly allow it.
* ``JobCertificate.Contents`` (base64 PKCS#12 or DER) and ``PrivateKeyPassword`` become sealed
  :class:`~producer.messages.CertificateData`; a null password is "no password", ``""`` is the
  empty password (Windows treats them differently).
* ``RestartService`` defaults to false (the peer's code default true is defect B19); ``WinRM
  Protocol`` ``ssh`` is refused; ``ServerUseSsl``, ``UseSSL``, ``StorePassword``,
  ``LastInventory``, ``JobCertificate.Thumbprint`` and ``ContentsFormat`` are ignored.

Every problem raises :class:`KeyfactorConfigError` (a :class:`ValueError`) naming the Keyfactor
field path, e.g. ``CertificateStoreDetails.Properties["WinRM Port"]``, and the fix.

Output: :func:`to_keyfactor_result` (``JobResult``: ``Result``, ``JobHistoryId``,
``FailureMessage``) and :func:`to_keyfactor_inventory` (``CurrentInventoryItem`` list), with
enum values as their names (``"Success"``, ``"Unknown"``).

The package by concern: :mod:`~producer.keyfactor.fields` (key lookup, typed values, the
error), :mod:`~producer.keyfactor.store_fields` (Capability, OperationType, ClientMachine, WinRM
Protocol), :mod:`~producer.keyfactor.job_fields` (entry parameters, alias, key, SANs, ids),
:mod:`~producer.keyfactor.sealing` (credential and certificate, sealed),
:mod:`~producer.keyfactor.convert` (the whole conversion) and :mod:`~producer.keyfactor.output`
(results in Keyfactor's shapes).
"""

from producer.keyfactor.convert import KeyfactorJob, from_keyfactor, parse_keyfactor
from producer.keyfactor.fields import KeyfactorConfigError
from producer.keyfactor.output import keyfactor_output, to_keyfactor_inventory, to_keyfactor_result

__all__ = [
    "KeyfactorConfigError",
    "KeyfactorJob",
    "from_keyfactor",
    "keyfactor_output",
    "parse_keyfactor",
    "to_keyfactor_inventory",
    "to_keyfactor_result",
]
