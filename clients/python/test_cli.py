"""Unit tests of shmbus_cli.py's checked messages (python3 -m unittest)."""

import argparse
import unittest
import zlib

import shmbus_cli as cli


class TestCheckedMessages(unittest.TestCase):

    def test_round_trip(self):
        for size in (0, 1, 250, 251, 252, 100000):
            msg = cli.checked_message(3, 7, 2, size)
            self.assertEqual(len(msg), 16 + size)
            self.assertEqual(cli.verify_message(2, msg), (3, 7, size))

    def test_bodies_differ_by_producer_and_seq(self):
        a = cli.checked_body(0, 0, 1000)
        self.assertNotEqual(a, cli.checked_body(1, 0, 1000))
        self.assertNotEqual(a, cli.checked_body(0, 1, 1000))

    def test_golden(self):
        # The Go tests make the same bytes (python_test.go, checkedMessage).
        self.assertEqual(cli.checked_message(1, 2, 3, 10).hex(),
                         "0100000002000000030000003ae251e9a047ee953ce38a31d87f")

    def test_damage_detected(self):
        msg = cli.checked_message(1, 5, 0, 5000)
        cases = {
            "flipped body byte": msg[:3000] + bytes([msg[3000] ^ 1]) + msg[3001:],
            "truncated": msg[:-1],
            "extended": msg + b"\0",
            "short header": msg[:15],
            "other seq": msg[:4] + b"\x06\0\0\0" + msg[8:],
        }
        for name, bad in cases.items():
            with self.assertRaises(cli.VerifyError, msg=name):
                cli.verify_message(0, bad)

    def test_body_replaced_with_matching_crc_detected(self):
        # A body with its own correct CRC but not the pattern is caught too.
        msg = bytearray(cli.checked_message(1, 5, 0, 100))
        body = bytes(100)
        msg[12:16] = zlib.crc32(body).to_bytes(4, "little")
        with self.assertRaises(cli.VerifyError):
            cli.verify_message(0, bytes(msg[:16]) + body)

    def test_wrong_priority_detected(self):
        with self.assertRaises(cli.VerifyError):
            cli.verify_message(1, cli.checked_message(0, 0, 2, 10))

    def test_parse_size(self):
        # The shmbus command's SIZE: k, M, G, T or KiB, ..., any case.
        for text, want in [("4096", 4096), ("64KiB", 65536), ("3MiB", 3 << 20),
                           ("0", 0), ("1B", 1), ("64k", 65536), ("64K", 65536),
                           ("1M", 1 << 20), ("1mib", 1 << 20), ("2G", 2 << 30)]:
            self.assertEqual(cli.parse_size(text), want)
        for text in ("1KB", "1mb", "1.5M", "-1", "x", "", "1 k"):
            with self.assertRaises(argparse.ArgumentTypeError, msg=text) as cm:
                cli.parse_size(text)
            self.assertIn(repr(text), str(cm.exception))

    def test_parse_duration(self):
        # The shmbus command's DUR: Go durations, or plain seconds.
        for text, want in [("1", 1.0), ("0.5", 0.5), ("0", 0.0), ("1s", 1.0),
                           ("100ms", 0.1), ("1m30s", 90.0), ("2h", 7200.0),
                           ("250us", 0.00025), ("1.5s", 1.5)]:
            self.assertAlmostEqual(cli.parse_duration(text), want, msg=text)
        for text in ("soon", "-1", "-1s", "1x", "s", "1s2", "", "nan", "inf"):
            with self.assertRaises(argparse.ArgumentTypeError, msg=text):
                cli.parse_duration(text)

    def test_format_seconds(self):
        for seconds, want in [(0.3, "300ms"), (1, "1s"), (1.5, "1.5s"),
                              (90, "1m30s")]:
            self.assertEqual(cli.format_seconds(seconds), want)


if __name__ == "__main__":
    unittest.main()
