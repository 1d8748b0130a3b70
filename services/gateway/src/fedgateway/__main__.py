"""`python -m fedgateway`: run one party's gateway with settings from the environment."""

from fedgateway.main import main

if __name__ == "__main__":
    main()
