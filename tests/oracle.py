"""Kept while tests import it by its old name: the oracle lives in qute.oracle."""
from qute.oracle import *  # noqa: F401,F403
from qute.oracle import _NP  # noqa: F401
