"""Signals other apps may listen to, so this app needs no import of theirs."""
from django.dispatch import Signal

# After every reconcile with the runtime (about once a second while a page is
# open, and on page loads), in the thread that did it.  kwargs: containers,
# the runtime's list.
reconciled = Signal()
