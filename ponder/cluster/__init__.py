"""What talks to the Ray cluster: connecting (``runtime``), placement groups (``placement``),
the replica pools built from config (``pools``), and the persistent engine as a detached
actor (``server``) with its clients (``client``) and their auth (``auth``).
"""
