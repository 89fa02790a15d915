"""supervisord event listeners: the log forwarder and the watchdog."""
