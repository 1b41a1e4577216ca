"""Two protocol sessions over an in-memory link: no sockets, no event loop."""

from __future__ import annotations

from dataclasses import dataclass

from relay_protocol.events import Event, StreamOpened
from relay_protocol.frames import Frame, FrameDecoder, FrameType, encode_frame
from relay_protocol.handshake import Hello, Welcome
from relay_protocol.heads import RequestHead, ResponseHead
from relay_protocol.session import Role, Session

#: Smallest window a peer may announce; small windows keep flow-control tests cheap.
KIB = 1024


def frames(data: bytes) -> list[Frame]:
    """Every whole frame in ``data`` (asserting nothing is left over)."""
    decoder = FrameDecoder()
    out = decoder.feed(data)
    assert decoder.pending == 0, "data_to_send() must emit whole frames only"
    return out


def of_type(found: list[Frame], ftype: FrameType) -> list[Frame]:
    """The frames of one type, in order."""
    return [frame for frame in found if frame.type is ftype]


@dataclass
class Link:
    """A relay and an agent session wired back to back."""

    relay: Session
    agent: Session

    def to_agent(self) -> list[Event]:
        """Deliver everything the relay queued; the agent's events."""
        return self.agent.receive_data(self.relay.data_to_send())

    def to_relay(self) -> list[Event]:
        """Deliver everything the agent queued; the relay's events."""
        return self.relay.receive_data(self.agent.data_to_send())

    def raw_to_agent(self, ftype: FrameType, flags: int, stream_id: int, payload: bytes = b"") -> list[Event]:
        """Hand-craft a frame the relay's API would refuse to send."""
        return self.agent.receive_data(encode_frame(ftype, flags, stream_id, payload))

    def raw_to_relay(self, ftype: FrameType, flags: int, stream_id: int, payload: bytes = b"") -> list[Event]:
        """Hand-craft a frame the agent's API would refuse to send."""
        return self.relay.receive_data(encode_frame(ftype, flags, stream_id, payload))

    def open(self, head: RequestHead | None = None, end_stream: bool = False) -> int:
        """Relay opens a stream and the agent sees it; returns the stream id."""
        sid = self.relay.open_stream(head or RequestHead("GET", "/"), end_stream=end_stream)
        events = self.to_agent()
        assert [type(e) for e in events] == [StreamOpened]
        return sid

    def answer(self, sid: int, end_stream: bool = False) -> None:
        """Agent answers ``sid`` with a 200 head and the relay sees it."""
        self.agent.send_response(sid, ResponseHead(200, "OK"), end_stream=end_stream)
        self.to_relay()


def connect(
    *,
    relay_stream_window: int = 64 * KIB,
    relay_connection_window: int = 256 * KIB,
    agent_stream_window: int = 64 * KIB,
    agent_connection_window: int = 256 * KIB,
    relay_max_streams: int = 100,
    agent_max_streams: int | None = 100,
) -> Link:
    """A relay and an agent after a successful HELLO/WELCOME exchange.

    ``agent_max_streams=None`` builds the agent as the product does (default limit).
    """
    relay = Session(
        Role.RELAY,
        stream_window=relay_stream_window,
        connection_window=relay_connection_window,
        max_streams=relay_max_streams,
    )
    limit = {} if agent_max_streams is None else {"max_streams": agent_max_streams}
    agent = Session(Role.AGENT, stream_window=agent_stream_window, connection_window=agent_connection_window, **limit)
    link = Link(relay, agent)
    agent.send_hello(Hello(subdomain="demo", agent_key="k1", client="tests"))
    link.to_relay()
    relay.accept(Welcome(version=0, name="demo", public_url="http://demo.localhost:8080"))
    link.to_agent()
    return link
