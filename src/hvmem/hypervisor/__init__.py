"""The hypervisor: pmap, fault handling, shadow and nested paging, reclamation.

It never imports the guest: they meet at hardware objects.
"""
