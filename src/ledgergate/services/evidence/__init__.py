"""Evidence bundles for auditors: ``bundle`` writes one (entries, proofs, records, state,
report, signed manifest), ``standalone`` verifies one without ledgergate (shipped inside
as ``verify.py``), ``records`` gathers the state in force, ``report`` renders the
readable report mapped to SOC 2 and ISO/IEC 27001 controls."""
