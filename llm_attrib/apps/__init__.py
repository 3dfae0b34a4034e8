"""What users do with the library: trace generation sources, audit provenance, run recipes."""
