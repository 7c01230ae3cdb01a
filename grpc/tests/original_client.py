"""The original CS262 service's clients against a real raftchat cluster, over its gRPC API.

Run by scripts/grpc-test (part of scripts/test), which starts a 3-node cluster with
`raftchat cluster up --grpc` and generates the Python stubs from grpc/proto/rpc_service.proto
with grpcio-tools, exactly as the original's clients were built. This file then:

1. performs every operation, with every status it can give, through every node by itself
   (a node that is not the leader forwards the call, so each gives the real answer), the
   original's error orders included;
2. streams sends the way the original client does (try the servers in order, move on after
   SERVER_ERROR or a gRPC error), kills the leader with SIGKILL in the middle of the stream,
   and checks that every acknowledged message is in the inbox exactly once, that no message is
   there twice, and that every answer came within the original client's 3 s.

Usage: original_client.py --dir CLUSTER_DIR --raftchat PATH_TO_raftchat
"""

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib

import grpc
import rpc_service_pb2 as pb2
import rpc_service_pb2_grpc as pb2_grpc

CREATE, CHECK, LIST, DELETE, SEND, FETCH = 1, 2, 3, 4, 5, 6
SUCCESS, NO_ELEMENT = 0, 1
OPERATION_NOT_SUPPORTED, INVALID_USERNAME, ACCOUNT_NOT_EXIST, MESSAGE_TOO_LONG = 100, 101, 102, 103
SERVER_ERROR, GENERAL_ERROR = 190, 199
# Not in the original: an account with a password, which the gateway carries none of.
AUTH_FAILED = 105

# The original client gives up after about 3 s; every answer must come well before.
ANSWER_WITHIN_S = 3.0
# A call that takes longer than this is a hang, and fails the test.
CALL_TIMEOUT_S = 10.0
STREAM_LENGTH = 400
KILL_AFTER = 120


class Failure(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failure(what)


class Cluster:
    def __init__(self, directory, raftchat):
        self.directory = directory
        self.raftchat = raftchat
        self.cluster_file = os.path.join(directory, "cluster.toml")
        with open(self.cluster_file, "rb") as f:
            nodes = tomllib.load(f)["nodes"]
        self.ids = [node["id"] for node in nodes]
        self.stubs = {}
        for node in nodes:
            channel = grpc.insecure_channel(node["grpc_address"])
            self.stubs[node["id"]] = pb2_grpc.ChatServiceStub(channel)
        self.slowest = 0.0
        self.last_call_failed = False

    def call(self, node, request):
        """One call to one node; the answer, or None for a gRPC error."""
        started = time.monotonic()
        try:
            return self.stubs[node].rpc_chat_serve(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError:
            return None
        finally:
            self.slowest = max(self.slowest, time.monotonic() - started)

    def try_all(self, request, tell_refusals=False):
        """The original client's rpc_try_all: the servers in order, until one answers with a
        status other than SERVER_ERROR. With tell_refusals, also whether every server answered
        SERVER_ERROR (rather than failing with a gRPC error)."""
        refused = True
        # Whether an attempt failed with a gRPC error (a server killed mid-call, a deadline):
        # the original client cannot know whether that server applied the request, and moves
        # on to the next, which may apply it again.
        self.last_call_failed = False
        for node in self.ids:
            response = self.call(node, request)
            if response is not None and response.status != SERVER_ERROR:
                return (response, False) if tell_refusals else response
            refused = refused and response is not None
            self.last_call_failed = self.last_call_failed or response is None
        return (None, refused) if tell_refusals else None

    def leader(self):
        out = subprocess.run(
            [self.raftchat, "--cluster", self.cluster_file, "status"],
            capture_output=True, text=True, timeout=30,
        ).stdout
        for line in out.splitlines():
            if line.startswith("leader:"):
                value = line.split(":", 1)[1].strip()
                if value.isdigit():
                    return int(value)
        raise Failure(f"no leader in `raftchat status`:\n{out}")

    def kill(self, node):
        with open(os.path.join(self.directory, f"{node}.pid")) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGKILL)

    def restart_missing(self):
        subprocess.run(
            [self.raftchat, "cluster", "up", "--dir", self.directory, "--nodes", str(len(self.ids))],
            check=True, capture_output=True, timeout=60,
        )


def request(op, username="", target_name="", message="", wildcard="", param_1=0):
    return pb2.ChatRequest(op=op, username=username, target_name=target_name,
                           message=message, wildcard=wildcard, param_1=param_1)


def expect(cluster, node, req, status, what):
    response = cluster.call(node, req)
    check(response is not None, f"node {node}: {what}: gRPC error")
    check(response.op == req.op, f"node {node}: {what}: op {response.op} echoed for {req.op}")
    check(response.status == status,
          f"node {node}: {what}: status {response.status}, expected {status} ({list(response.messages)[:1]})")
    if not (status == SUCCESS and req.op in (LIST, FETCH)):
        check(len(response.messages) == 1 and response.messages[0],
              f"node {node}: {what}: messages[0] must carry a text: {response}")
    return response


def every_operation_through_every_node(cluster):
    long_text = "m" * 501
    for node in cluster.ids:
        me, peer = f"user{node}", f"peer{node}"
        expect(cluster, node, request(CREATE, me), SUCCESS, "create")
        expect(cluster, node, request(CREATE, peer), SUCCESS, "create a second account")
        expect(cluster, node, request(CREATE, me), GENERAL_ERROR, "create an existing account")
        expect(cluster, node, request(CREATE, ""), INVALID_USERNAME, "create an empty name")
        expect(cluster, node, request(CREATE, "n" * 21), INVALID_USERNAME, "create a long name")
        expect(cluster, node, request(CHECK, me), SUCCESS, "check")
        expect(cluster, node, request(CHECK, "ghost"), ACCOUNT_NOT_EXIST, "check a missing account")
        listed = expect(cluster, node, request(LIST, wildcard=f"*{node}"), SUCCESS, "list")
        check(list(listed.usernames) == [me, peer], f"node {node}: list gave {list(listed.usernames)}")
        expect(cluster, node, request(LIST, wildcard="*" * 257), GENERAL_ERROR, "list a long wildcard")
        expect(cluster, node, request(SEND, me, peer, "hello"), SUCCESS, "send")
        expect(cluster, node, request(SEND, peer, peer, "note to self"), SUCCESS, "send to oneself")
        expect(cluster, node, request(SEND, "ghost", peer, "hi"), ACCOUNT_NOT_EXIST, "send from a missing sender")
        expect(cluster, node, request(SEND, me, "ghost", "hi"), ACCOUNT_NOT_EXIST, "send to a missing target")
        # The original's order: the length first, even between accounts that do not exist.
        expect(cluster, node, request(SEND, "ghost", "nobody", long_text), MESSAGE_TOO_LONG, "send too long, no accounts")
        expect(cluster, node, request(SEND, me, peer, long_text), MESSAGE_TOO_LONG, "send too long")
        fetched = expect(cluster, node, request(FETCH, peer, param_1=1), SUCCESS, "fetch")
        check(list(fetched.usernames) == [me, peer] and list(fetched.messages) == ["hello", "note to self"],
              f"node {node}: fetch gave {fetched}")
        fetched = expect(cluster, node, request(FETCH, peer, param_1=2), SUCCESS, "fetch from id 2")
        check(list(fetched.messages) == ["note to self"], f"node {node}: fetch from 2 gave {fetched}")
        expect(cluster, node, request(FETCH, peer, param_1=3), NO_ELEMENT, "fetch past the end")
        expect(cluster, node, request(FETCH, "ghost", param_1=1), ACCOUNT_NOT_EXIST, "fetch a missing account")
        # The original's order: the id first, even for an account that does not exist.
        expect(cluster, node, request(FETCH, "ghost", param_1=0), GENERAL_ERROR, "fetch id 0, no account")
        expect(cluster, node, request(FETCH, peer, param_1=-3), GENERAL_ERROR, "fetch a negative id")
        expect(cluster, node, request(7, me), OPERATION_NOT_SUPPORTED, "op 7")
        expect(cluster, node, request(0, me), OPERATION_NOT_SUPPORTED, "op 0")
        expect(cluster, node, request(DELETE, me), SUCCESS, "delete")
        expect(cluster, node, request(DELETE, me), ACCOUNT_NOT_EXIST, "delete a deleted account")
        expect(cluster, node, request(CHECK, me), ACCOUNT_NOT_EXIST, "check a deleted account")
    print(f"every operation and status through nodes {cluster.ids}: ok")


def protected_accounts_are_refused(cluster):
    """An account created with a password (through raftchat's own protocol) is protected on
    the gateway too: it carries no token, so acting on the account gets AUTH_FAILED and a text
    saying why; writing to it, checking and listing it stay open."""
    created = subprocess.run(
        [cluster.raftchat, "--cluster", cluster.cluster_file, "create", "vault", "--password"],
        env={**os.environ, "RAFTCHAT_PASSWORD": "vault's secret"},
        capture_output=True, text=True, timeout=30,
    )
    check(created.returncode == 0 and "SUCCESS" in created.stdout,
          f"`raftchat create vault --password`: {created.stdout}{created.stderr}")
    for node in cluster.ids:
        expect(cluster, node, request(CHECK, "vault"), SUCCESS, "check a protected account")
        expect(cluster, node, request(CREATE, f"open{node}"), SUCCESS, "create an open account")
        expect(cluster, node, request(SEND, f"open{node}", "vault", "hi"), SUCCESS,
               "send to a protected account")
        for req, what in [(request(FETCH, "vault", param_1=1), "fetch a protected inbox"),
                          (request(SEND, "vault", f"open{node}", "hi"), "send as a protected account"),
                          (request(DELETE, "vault"), "delete a protected account")]:
            refused = expect(cluster, node, req, AUTH_FAILED, what)
            check("password" in refused.messages[0],
                  f"node {node}: {what}: the text must say why: {refused.messages[0]!r}")
    print(f"a protected account refused through nodes {cluster.ids}: ok")


def sends_through_a_leader_kill(cluster):
    for name in ("alice", "bob"):
        response = cluster.try_all(request(CREATE, name))
        check(response is not None and response.status == SUCCESS, f"create {name}: {response}")
    outcomes = {}
    refused_everywhere = set()  # every server answered SERVER_ERROR: nothing was applied
    # Sends where a server failed with a gRPC error before another answered: the original
    # client's at-least-once retry may have applied them twice. Every other send must be
    # applied at most once.
    retried_after_error = set()
    sent = threading.Event()

    def stream():
        for k in range(STREAM_LENGTH):
            text = f"m{k}"
            response, refused = cluster.try_all(request(SEND, "alice", "bob", text), tell_refusals=True)
            outcomes[text] = None if response is None else (response.status, response.messages[0])
            if response is None and refused:
                refused_everywhere.add(text)
            if cluster.last_call_failed:
                retried_after_error.add(text)
            if k == KILL_AFTER:
                sent.set()
        sent.set()

    sender = threading.Thread(target=stream)
    sender.start()
    sent.wait()
    leader = cluster.leader()
    cluster.kill(leader)
    killed_at = time.monotonic()
    sender.join()
    print(f"killed leader {leader} after {KILL_AFTER} sends; stream ended "
          f"{time.monotonic() - killed_at:.1f} s later")
    cluster.restart_missing()

    acknowledged = {t for t, o in outcomes.items() if o is not None and o[0] == SUCCESS}
    unknown = {t for t, o in outcomes.items() if o is not None and o[0] == GENERAL_ERROR}
    unanswered = {t for t, o in outcomes.items() if o is None}
    other = {t: o for t, o in outcomes.items() if o is not None and o[0] not in (SUCCESS, GENERAL_ERROR)}
    check(not other, f"unexpected statuses: {other}")
    for text in unknown:
        check("unknown" in outcomes[text][1], f"{text}: a GENERAL_ERROR that is not an unknown outcome: {outcomes[text]}")

    inbox = []
    first = 1
    while True:
        response = cluster.try_all(request(FETCH, "bob", param_1=first))
        check(response is not None, "fetch after the stream: no server answered")
        if response.status == NO_ELEMENT:
            break
        check(response.status == SUCCESS, f"fetch after the stream: {response}")
        check(list(response.usernames) == ["alice"] * len(response.messages), "senders")
        inbox.extend(response.messages)
        first += len(response.messages)
    counts = {}
    for text in inbox:
        counts[text] = counts.get(text, 0) + 1
    duplicated = {t: c for t, c in counts.items() if c > 1}
    retried_twice = {t: c for t, c in duplicated.items() if t in retried_after_error}
    duplicated = {t: c for t, c in duplicated.items() if t not in retried_after_error}
    check(not duplicated, f"messages delivered twice: {duplicated}")
    if retried_twice:
        print(f"delivered twice after a gRPC error sent the client to the next server (the "
              f"original client's at-least-once retry): {retried_twice}")
    missing = acknowledged - counts.keys()
    check(not missing, f"acknowledged messages missing from the inbox: {sorted(missing)}")
    strangers = counts.keys() - outcomes.keys()
    check(not strangers, f"messages nobody sent: {strangers}")
    applied_anyway = refused_everywhere & counts.keys()
    check(not applied_anyway, f"answered SERVER_ERROR by every server, yet delivered: {applied_anyway}")
    check(len(acknowledged) >= STREAM_LENGTH // 2, f"only {len(acknowledged)} of {STREAM_LENGTH} acknowledged")
    print(f"stream of {STREAM_LENGTH} sends through the kill: {len(acknowledged)} acknowledged, "
          f"{len(unknown)} unknown, {len(unanswered)} unanswered; inbox holds {len(inbox)}, "
          f"each once, every acknowledged one included")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--raftchat", required=True)
    args = parser.parse_args()
    cluster = Cluster(args.dir, args.raftchat)
    try:
        every_operation_through_every_node(cluster)
        protected_accounts_are_refused(cluster)
        sends_through_a_leader_kill(cluster)
        check(cluster.slowest < ANSWER_WITHIN_S,
              f"the slowest answer took {cluster.slowest:.2f} s, beyond the original client's {ANSWER_WITHIN_S} s")
        print(f"slowest answer: {cluster.slowest:.2f} s")
    except Failure as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    print("ok: the original service's clients work against raftchat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
