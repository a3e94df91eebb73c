"""Deployment: local launchers (``deploy/local``) and production manifests."""
