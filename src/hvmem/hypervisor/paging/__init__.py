"""How the hypervisor keeps guest translations in hardware: shadow or nested paging."""
