"""The site program: the money of a horizon as one linear program, and the solver it runs on."""
