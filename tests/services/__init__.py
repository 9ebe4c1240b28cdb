"""Real services the tests start (a Modbus TCP device, an MQTT broker), one module each;
`tests/conftest.py` hands them out as session fixtures."""
