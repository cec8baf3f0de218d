"""LBRY claim values: decode every form lbry.go accepts, build v2 claims, print them as reflector.go does."""
