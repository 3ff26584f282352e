"""A cheap Argon2id for the test suite only.

Production's Argon2id parameters cost about a third of a second per hash on this CPU, and the
suite creates thousands of users; the algorithm and its encoding stay the same, only the cost
parameters drop.
"""

from django.contrib.auth.hashers import Argon2PasswordHasher


class FastArgon2PasswordHasher(Argon2PasswordHasher):
    time_cost = 1
    memory_cost = 64
    parallelism = 1
