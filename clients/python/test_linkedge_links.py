"""Runs tests/vectors/tokens.json through linkedge_links: python3 -m unittest discover clients/python"""
import json
import pathlib
import unittest

from linkedge_links import Minter, valid_destination

VECTORS = pathlib.Path(__file__).resolve().parents[2] / "tests" / "vectors" / "tokens.json"


class Vectors(unittest.TestCase):
    def setUp(self):
        self.file = json.loads(VECTORS.read_text(encoding="utf-8"))
        self.keys = {k["id"]: k["secret"] for k in self.file["keys"]}

    def test_every_valid_vector_mints_its_token(self):
        self.assertGreaterEqual(len(self.file["valid"]), 30)
        for c in self.file["valid"]:
            with self.subTest(c["name"]):
                m = Minter(c["key_id"], self.keys[c["key_id"]])
                ids = (c["workspace"], c["message"], c["link"], c["issued"])
                if c["kind"] == "open":
                    got = m.open(c["host"], *ids)
                else:
                    mint = m.click if c["kind"] == "click" else m.trap
                    got = mint(c["host"], c["url"], *ids)
                self.assertEqual(got, c["tracked_url"])

    def test_refuses_what_linkedge_refuses(self):
        m = Minter(1, self.keys[1])
        for url in ["javascript:alert(1)", "/relative", "https://e.com/a b", "https:///x", "https://e.com/\udcff", "https://e.com/" + "x" * 2048]:
            self.assertFalse(valid_destination(url), url)
            with self.assertRaises(ValueError):
                m.click("link.example.com", url, 1, 2)
        for host in ["Link.example.com", "link.example.com.", "link.example.com:443", "", "[" + "0:" * 130 + "1]"]:
            with self.assertRaises(ValueError):
                m.click(host, "https://example.com/", 1, 2)
        with self.assertRaises(ValueError):
            m.click("link.example.com", "https://example.com/", -1, 2)
        with self.assertRaises(ValueError):
            m.click("link.example.com", "https://example.com/", 1 << 64, 2)
        with self.assertRaises(ValueError):
            Minter(1, b"short")


if __name__ == "__main__":
    unittest.main()
