from homekube.cli.main import main

main()
