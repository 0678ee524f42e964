"""notification-service: messages to users, stored (delivery is a log line in the example)."""
