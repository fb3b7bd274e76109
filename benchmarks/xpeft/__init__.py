"""X-PEFT: trained adapter banks, and bytes per profile and serving speed."""
