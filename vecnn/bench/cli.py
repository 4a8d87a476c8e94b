"""`vecnn bench`: placeholder wiring; the ladder is being built (see issue 5)."""
HELP = "measure the vectorization ladder and vecnn against the frameworks"
DESCRIPTION = HELP


def configure(parser):
    parser.add_argument("--quick", action="store_true")


def main(args) -> int:
    raise ValueError("vecnn bench: not built yet")
