"""user-service: customers, and a welcome order for each new one."""
