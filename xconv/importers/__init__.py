"""Front-ends that import hand-written models into specs."""
