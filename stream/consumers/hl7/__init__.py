"""HL7 v2 alarm bridge: alert events -> IHE PCD-04 ORU^R40 over MLLP (``mirage hl7-bridge``)."""
