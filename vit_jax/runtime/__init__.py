"""Runtime: the process set-up before JAX starts (distributed, CPU devices, malloc)."""
