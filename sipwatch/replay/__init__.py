"""``sipwatch replay``: the synchronous driver of the pipeline core and its report.

``driver`` runs the pipeline over files or stdin, ``diagnosis`` asks the rules about the
failure groups it found, ``report`` renders the result as text or JSON.
"""
