"""`llmaas up` refuses a base port whose ports are taken: the check binds real sockets on loopback."""

from __future__ import annotations

import socket

import pytest
from llmaas.stack.ports import StackPorts, port_taken
from llmaas.stack.up import PortTaken, StackOptions, refuse_taken_ports

from tests.support.ports import free_base_port

pytestmark = pytest.mark.integration


def test_a_listening_port_is_refused_with_one_line_naming_it_and_its_component(tmp_path):
    base = free_base_port()
    options = StackOptions(data_dir=tmp_path, base_port=base, triton_replicas=2)
    refuse_taken_ports(options, jaeger=False)  # all free
    taken = StackPorts(base).triton(2).http
    with socket.create_server(("127.0.0.1", taken)):
        assert port_taken(taken)
        with pytest.raises(PortTaken) as refused:
            refuse_taken_ports(options, jaeger=False)
    message = str(refused.value)
    assert f"port {taken} (triton-2 http)" in message and "--base-port" in message and "\n" not in message
    assert not port_taken(taken)


def test_a_port_bound_without_reuse_is_taken_too():
    base = free_base_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base))  # bound, not listening: a component's bind would fail all the same
        assert port_taken(base)
