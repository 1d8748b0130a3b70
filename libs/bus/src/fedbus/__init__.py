"""fedbus: one message-bus interface over memory://, amqp:// and pulsar://."""
