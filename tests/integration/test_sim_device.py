"""`petra sim device` (issue 16) as a newcomer runs it: a real simulated SDM630 on loopback,
read over Modbus TCP at the register the smart meter reads, then stopped with Ctrl-C."""

from __future__ import annotations

import signal
import subprocess

import pytest
from pymodbus.client import ModbusTcpClient
from waiting import wait_until

from simulation.processes import PETRA, free_port
from smartmeter.modbus import FLOAT32, SDM630_TOTAL_POWER


def test_petra_sim_device_serves_a_meter_until_ctrl_c() -> None:
    port = free_port()
    process = subprocess.Popen(
        [*PETRA, "sim", "device", "sdm630", "--port", str(port), "--profile", "1500"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def reads() -> float | None:
            assert process.poll() is None, process.communicate()
            client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
            try:
                if not client.connect():  # type: ignore[no-untyped-call]
                    return None
                answer = client.read_input_registers(SDM630_TOTAL_POWER, count=2, device_id=1)
                power = client.convert_from_registers(answer.registers, data_type=FLOAT32)
                return float(power)  # type: ignore[arg-type]
            finally:
                client.close()  # type: ignore[no-untyped-call]

        assert wait_until(reads, 30, "the simulated meter") == pytest.approx(1500.0)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "stopped" in err.decode()
    assert "Traceback" not in err.decode()
    assert f"127.0.0.1:{port}" in err.decode()
