"""What leaves the box: MQTT payloads and topics, the connection, delivery, the on-disk spool,
Home Assistant discovery."""
