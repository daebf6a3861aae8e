"""Caches of API objects kept in step by list and watch, with client-go's informer semantics
(:mod:`.store`, :mod:`.reflector`): the operator's view of its kinds, and the dashboard's, which
lists and watches with the user's own credentials."""
