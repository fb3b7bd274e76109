"""Multi-source selection: its evaluation on GLUE and its speed."""
