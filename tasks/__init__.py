"""The work of finetrack, one concern per module; plain typed functions, testable alone."""
