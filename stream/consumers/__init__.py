"""Consumers of the alerts topic: the nursing dashboard, the HL7 (IHE PCD-04) bridge and the audit trail."""
