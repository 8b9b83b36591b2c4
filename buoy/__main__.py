"""`python -m buoy`, the same as the `buoy` command."""

from buoy.cli.main import main

if __name__ == "__main__":
    main()
