"""The guest operating system model.

It never imports the hypervisor: they meet at hardware objects.
"""
