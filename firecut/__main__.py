from firecut.cli import main

main()
