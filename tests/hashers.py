"""The password hasher of the test settings (tests/settings.py): Django's own
PBKDF2-SHA256, same algorithm name and hash format, with one iteration
instead of a million.  Hashing strength is not what any test checks, and the
production count costs ~0.5 s of CPU per user made or password checked
(every role fixture, every login through a form): minutes over the suite.
A hash made with the production count (scripts/run.sh's admin) still
verifies, since the count is stored in the hash."""
from django.contrib.auth.hashers import PBKDF2PasswordHasher


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1
