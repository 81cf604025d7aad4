"""What the tests share besides fixtures: data helpers, services, the cluster harness and the
search test's command and polls. conftest.py holds only fixtures and hooks; bench/ may import
from here, never the reverse."""
